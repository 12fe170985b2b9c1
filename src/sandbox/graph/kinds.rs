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
//!
//! The Threads host alone serves `GET /oauth/access_token?client_id=A&client_secret=S&
//! grant_type=client_credentials` ("Threads API": *App Access Tokens*): the Threads app's own
//! app access token, `TH|A|...`. Strict: GET only, all three parameters required (code 100),
//! no other grant, an unknown app is code 101 and a wrong secret code 1, as Graph answers
//! them (Meta does not document the Threads host's codes for those). The Instagram host
//! documents no app access token: there the path stays unknown.

use serde_json::{Map, Value, json};

use super::auth::{bad_app_id, bad_client_secret, dead_token_error, no_token};
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
        Endpoint::ThreadsAppToken => threads_app_token(w, call),
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

/// Length of the random part of a Threads app access token.
const APP_TOKEN_LEN: usize = 27;

/// `GET /oauth/access_token?client_id=A&client_secret=S&grant_type=client_credentials` on the
/// Threads host: `{"access_token": "TH|A|<random>", "token_type": "bearer"}` for the app's
/// right secret. [`Call::endpoint`] names this path on the Threads host only. The token is
/// not kept: nothing tokenwarden calls takes it.
fn threads_app_token(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    if !call.is_get() {
        return Err(unsupported(
            &call.method.to_ascii_lowercase(),
            "access_token",
        ));
    }
    // Every documented parameter is required; an empty one is as good as none.
    let param = |name: &str| {
        call.param(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| missing_param(name))
    };
    let app_id = param("client_id")?;
    let secret = param("client_secret")?;
    match param("grant_type")? {
        "client_credentials" => {}
        other => {
            return Err(GraphError::new(
                100,
                format!("(#100) Unsupported grant_type: {other}"),
            ));
        }
    }
    if w.app(app_id).is_none() {
        return Err(bad_app_id());
    }
    if w.secret_of(app_id) != Some(secret) {
        return Err(bad_client_secret());
    }
    let token = format!("TH|{app_id}|{}", w.rng.alnum(APP_TOKEN_LEN));
    Ok(Reply::json(
        200,
        &json!({"access_token": token, "token_type": "bearer"}),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::sandbox::fault::Endpoint;
    use crate::sandbox::graph::Call;
    use crate::sandbox::scenario::{DEMO_APP_ID, DEMO_APP_SECRET, OTHER_APP_SECRET, Scenario};
    use crate::sandbox::world::World;

    /// Sends `method path?query` through the sandbox's router: (HTTP status, body).
    fn send(w: &mut World, method: &str, path: &str, query: &str) -> (u16, Value) {
        let call = Call::parse(method, path, query, "", b"", None);
        let reply = super::super::dispatch(w, &call);
        let body = serde_json::from_slice(&reply.body).expect("JSON");
        (reply.status, body)
    }

    fn error(body: &Value) -> (u64, &str, &str) {
        let e = &body["error"];
        (
            e["code"].as_u64().expect("a code"),
            e["type"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default(),
        )
    }

    fn query(id: &str, secret: &str, grant: &str) -> String {
        format!("client_id={id}&client_secret={secret}&grant_type={grant}")
    }

    #[test]
    fn the_threads_host_gives_its_app_an_app_access_token() {
        let mut w = World::new(Scenario::demo());
        let q = query(DEMO_APP_ID, DEMO_APP_SECRET, "client_credentials");
        let (status, body) = send(&mut w, "GET", "/threads/oauth/access_token", &q);
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap();
        let (prefix, rest) = token.split_at(format!("TH|{DEMO_APP_ID}|").len());
        assert_eq!(prefix, format!("TH|{DEMO_APP_ID}|"));
        assert!(
            rest.len() >= 20 && rest.bytes().all(|c| c.is_ascii_alphanumeric()),
            "{token}"
        );
        assert!(
            !token.contains(DEMO_APP_SECRET),
            "not Graph's id|secret form"
        );
        assert_eq!(body["token_type"], "bearer");
        // A versioned path is the same endpoint.
        let (status, _) = send(&mut w, "GET", "/threads/v1.0/oauth/access_token", &q);
        assert_eq!(status, 200);
    }

    #[test]
    fn only_get_is_served() {
        let mut w = World::new(Scenario::demo());
        let q = query(DEMO_APP_ID, DEMO_APP_SECRET, "client_credentials");
        let (status, body) = send(&mut w, "POST", "/threads/oauth/access_token", &q);
        assert_eq!(status, 400, "{body}");
        let (code, kind, _) = error(&body);
        assert_eq!((code, kind), (100, "GraphMethodException"), "{body}");
        assert_eq!(body["error"]["error_subcode"], 33);
    }

    #[test]
    fn each_parameter_is_required() {
        let mut w = World::new(Scenario::demo());
        let full = [
            ("client_id", DEMO_APP_ID),
            ("client_secret", DEMO_APP_SECRET),
            ("grant_type", "client_credentials"),
        ];
        for missing in ["client_id", "client_secret", "grant_type"] {
            for empty in [false, true] {
                let q: Vec<String> = full
                    .iter()
                    .filter(|(k, _)| empty || *k != missing)
                    .map(|(k, v)| format!("{k}={}", if *k == missing { "" } else { v }))
                    .collect();
                let (status, body) =
                    send(&mut w, "GET", "/threads/oauth/access_token", &q.join("&"));
                assert_eq!(status, 400, "{missing}: {body}");
                let (code, kind, message) = error(&body);
                assert_eq!((code, kind), (100, "OAuthException"), "{missing}: {body}");
                assert!(message.contains(missing), "{missing}: {message}");
            }
        }
    }

    #[test]
    fn only_client_credentials_is_granted() {
        let mut w = World::new(Scenario::demo());
        for grant in [
            "th_exchange_token",
            "fb_exchange_token",
            "authorization_code",
        ] {
            let q = query(DEMO_APP_ID, DEMO_APP_SECRET, grant);
            let (status, body) = send(&mut w, "GET", "/threads/oauth/access_token", &q);
            assert_eq!(status, 400, "{body}");
            let (code, _, message) = error(&body);
            assert_eq!(code, 100, "{body}");
            assert!(message.contains("Unsupported grant_type"), "{message}");
        }
    }

    #[test]
    fn an_unknown_app_is_101_and_a_wrong_secret_is_code_1() {
        let mut w = World::new(Scenario::demo());
        let q = query("111122223333444", DEMO_APP_SECRET, "client_credentials");
        let (status, body) = send(&mut w, "GET", "/threads/oauth/access_token", &q);
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            error(&body),
            (
                101,
                "OAuthException",
                "Error validating application. Invalid application ID."
            )
        );
        // Another app's secret (the Meta app's, for a Threads app) is wrong.
        for secret in [OTHER_APP_SECRET, "0123456789abcdef"] {
            let q = query(DEMO_APP_ID, secret, "client_credentials");
            let (status, body) = send(&mut w, "GET", "/threads/oauth/access_token", &q);
            assert_eq!(status, 400, "{body}");
            assert_eq!(
                error(&body),
                (1, "OAuthException", "Error validating client secret.")
            );
            assert!(!body.to_string().contains(secret), "no echo: {body}");
        }
    }

    #[test]
    fn the_instagram_host_has_no_app_access_token_and_graphs_path_is_unchanged() {
        let mut w = World::new(Scenario::demo());
        let q = query(DEMO_APP_ID, DEMO_APP_SECRET, "client_credentials");
        let ig = Call::parse("GET", "/instagram/oauth/access_token", &q, "", b"", None);
        assert_eq!(ig.endpoint(), Endpoint::Other);
        let (status, body) = send(&mut w, "GET", "/instagram/oauth/access_token", &q);
        assert_eq!((status, error(&body).0), (400, 2500), "{body}");
        // Graph's own `oauth/access_token` still answers its `APP_ID|SECRET` app token.
        let graph = Call::parse("GET", "/v21.0/oauth/access_token", &q, "", b"", None);
        assert_eq!(graph.endpoint(), Endpoint::Refresh);
        let (status, body) = send(&mut w, "GET", "/v21.0/oauth/access_token", &q);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["access_token"],
            format!("{DEMO_APP_ID}|{DEMO_APP_SECRET}")
        );
        let th = Call::parse("GET", "/threads/oauth/access_token", &q, "", b"", None);
        assert_eq!(th.endpoint(), Endpoint::ThreadsAppToken);
    }
}
