//! The Instagram host (graph.instagram.com, served under `/instagram`) and the Threads host
//! (graph.threads.net, under `/threads`): `GET /me` and `GET /refresh_access_token`, as
//! strict as Meta's pages for each ("Instagram API with Instagram Login": *Me*, *Refresh
//! Access Token*; "Threads API": *Long-Lived Access Tokens*). Everything else on those hosts
//! is an unknown path.
//!
//! Strict where a lenient simulator would pass a wrong client: the token is read only from
//! the `access_token` query parameter (the documented request; an `Authorization` header is
//! ignored), `grant_type` must be the host's own (`ig_refresh_token`, `th_refresh_token`),
//! only GET is served, a token of another host is "Cannot parse access token" (code 190, as
//! Graph answers an Instagram token), an expired token cannot be refreshed, and a token less
//! than 24 hours old is refused (the pages: "at least 24 hours old but has not expired"; the
//! code Meta uses for that is not documented, the sandbox answers code 100). `/me` answers
//! only the documented fields (`user_id,username` on Instagram, `id,username` on Threads).
//! `GET /access_token` exchanges a short-lived token (one hour) for a long-lived one with the
//! product app's own `client_secret` (the token's app's secret; another is "Error validating
//! client secret"); a token that is not short-lived is refused (code 100: Meta's answer to
//! that is not documented).

use serde_json::{Map, Value, json};

use super::auth::{bad_client_secret, dead_token_error, no_token};
use super::call::{Call, Host};
use super::envelope::{GraphError, Reply, missing_param, unsupported};
use crate::sandbox::fault::Endpoint;
use crate::sandbox::scenario::{DEMO_INSTAGRAM_USERNAME, DEMO_THREADS_USERNAME, TokenKind};
use crate::sandbox::world::{TokenRec, World, round_up_hour};

/// Age below which a refresh is refused ("at least 24 hours old").
const MIN_AGE: i64 = 24 * 3600;

/// Routes a call to the Instagram or Threads host.
pub(super) fn dispatch(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    match call.endpoint() {
        Endpoint::Me => me(w, call),
        Endpoint::RefreshAccessToken => refresh(w, call),
        Endpoint::ExchangeToken => exchange(w, call),
        _ => Err(GraphError::new(
            2500,
            format!("Unknown path components: /{}", call.segments.join("/")),
        )),
    }
}

/// The token kind a host issues.
fn kind_of(host: Host) -> TokenKind {
    match host {
        Host::Threads => TokenKind::Threads,
        _ => TokenKind::Instagram,
    }
}

/// What a host answers for a token it cannot parse (another host's, or none it issued).
pub(super) fn cannot_parse() -> GraphError {
    GraphError::new(
        190,
        "Invalid OAuth access token - Cannot parse access token",
    )
}

/// The valid token record of this host that the call carries in its query.
fn caller(w: &mut World, call: &Call) -> Result<TokenRec, GraphError> {
    // Only the documented `access_token` query parameter: a bearer header is not read here.
    let token = call
        .params
        .get("access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(no_token)?
        .clone();
    let rec = w
        .tokens
        .get(&token)
        .filter(|r| r.kind == kind_of(call.host))
        .cloned()
        .ok_or_else(cannot_parse)?;
    if let Some(e) = dead_token_error(w, &rec) {
        return Err(e);
    }
    Ok(rec)
}

/// `GET /me?fields=...`: the user the token speaks for.
fn me(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    if !call.is_get() {
        return Err(unsupported(&call.method.to_ascii_lowercase(), "me"));
    }
    let rec = caller(w, call)?;
    let id = rec.user_id.clone().unwrap_or_default();
    let (username, allowed): (&str, &[&str]) = match call.host {
        Host::Threads => (DEMO_THREADS_USERNAME, &["id", "username"]),
        _ => (DEMO_INSTAGRAM_USERNAME, &["id", "user_id", "username"]),
    };
    let fields = call.param("fields").unwrap_or("id");
    let mut out = Map::new();
    for f in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !allowed.contains(&f) {
            return Err(GraphError::new(
                100,
                format!("(#100) Tried accessing nonexisting field ({f}) on node type (User)"),
            ));
        }
        let v = if f == "username" { username } else { &id };
        out.insert(f.to_string(), json!(v));
    }
    // Meta adds the node's id to every read.
    out.entry("id").or_insert_with(|| json!(id));
    Ok(Reply::json(200, &Value::Object(out)))
}

/// `GET /refresh_access_token?grant_type=...&access_token=T`: a new long-lived token, 60 days
/// from now, for a token at least 24 hours old that has not expired.
fn refresh(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    if !call.is_get() {
        return Err(unsupported(
            &call.method.to_ascii_lowercase(),
            "refresh_access_token",
        ));
    }
    let grant = match call.host {
        Host::Threads => "th_refresh_token",
        _ => "ig_refresh_token",
    };
    match call.param("grant_type") {
        Some(g) if g == grant => {}
        Some(other) => {
            return Err(GraphError::new(
                100,
                format!("(#100) Unsupported grant_type: {other}"),
            ));
        }
        None => return Err(missing_param("grant_type")),
    }
    let rec = caller(w, call)?;
    let now = w.now();
    if now - rec.issued_at < MIN_AGE {
        return Err(GraphError::new(
            100,
            "(#100) The access token must be at least 24 hours old to be refreshed",
        ));
    }
    let new = if w.scenario.quirks.refresh_same_string {
        let r = w.tokens.get_mut(&rec.value).expect("looked up above");
        r.expires_at = round_up_hour(now + 60 * 86_400);
        r.issued_at = now;
        r.clone()
    } else {
        w.reissue_60d(&rec)
    };
    w.stats.refreshed += 1;
    Ok(Reply::json(
        200,
        &json!({"access_token": new.value, "token_type": "bearer", "expires_in": new.expires_at - now}),
    ))
}

/// `GET /access_token?grant_type=..._exchange_token&client_secret=S&access_token=T`: a
/// long-lived token for a short-lived one, with the secret of the token's own app.
fn exchange(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    if !call.is_get() {
        return Err(unsupported(
            &call.method.to_ascii_lowercase(),
            "access_token",
        ));
    }
    let grant = match call.host {
        Host::Threads => "th_exchange_token",
        _ => "ig_exchange_token",
    };
    match call.param("grant_type") {
        Some(g) if g == grant => {}
        Some(other) => {
            return Err(GraphError::new(
                100,
                format!("(#100) Unsupported grant_type: {other}"),
            ));
        }
        None => return Err(missing_param("grant_type")),
    }
    let secret = call
        .param("client_secret")
        .ok_or_else(|| missing_param("client_secret"))?
        .to_string();
    let rec = caller(w, call)?;
    if w.secret_of(&rec.app_id) != Some(secret.as_str()) {
        return Err(bad_client_secret());
    }
    if rec.expires_at == 0 || rec.expires_at - rec.issued_at > 2 * 3600 {
        return Err(GraphError::new(
            100,
            "(#100) Only a short-lived access token can be exchanged",
        ));
    }
    let new = w.reissue_60d(&rec);
    w.stats.refreshed += 1;
    let now = w.now();
    Ok(Reply::json(
        200,
        &json!({"access_token": new.value, "token_type": "bearer", "expires_in": new.expires_at - now}),
    ))
}
