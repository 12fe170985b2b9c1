//! The simulated Graph endpoints: authentication and `appsecret_proof`, debug_token, refresh,
//! mint, revoke, phone and WABA reads, messages and batches, with Meta's error envelopes,
//! headers and the quirks of reference section 8. Faults and latency are applied here too.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::scenario::{Endpoint, Fault, TokenKind};
use super::world::{Kill, SentMessage, Shared, Status, TokenRec, World, lock, pacific};
use crate::secret::{Fingerprint, Secret, appsecret_proof};

/// Most items a batch may hold.
const MAX_BATCH: usize = 50;
/// Permission names minting accepts; any other is refused as Meta refuses an unknown scope.
const KNOWN_SCOPES: &[&str] = &[
    "whatsapp_business_management",
    "whatsapp_business_messaging",
    "whatsapp_business_manage_events",
    "business_management",
    "ads_management",
    "ads_read",
    "catalog_management",
    "pages_show_list",
    "pages_read_engagement",
    "pages_manage_metadata",
    "pages_messaging",
    "instagram_basic",
    "instagram_manage_messages",
    "email",
    "public_profile",
];
/// How far `appsecret_time` may be from the sandbox clock (reference section 4).
const PROOF_TIME_WINDOW: i64 = 300;
const JSON_TYPE: &str = "application/json; charset=UTF-8";
const GRAPH_DOCS: &str = "https://developers.facebook.com/docs/graph-api";

/// An answer before it becomes an HTTP response (or a batch item).
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: JSON_TYPE,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    fn raw(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// One Graph call, already parsed: from HTTP or from a batch item.
#[derive(Clone, Debug, Default)]
pub(crate) struct Call {
    pub method: String,
    /// Path segments after the version prefix.
    pub segments: Vec<String>,
    /// Query and form parameters; later sources override earlier ones.
    pub params: HashMap<String, String>,
    /// A JSON request body, when there was one.
    pub json: Option<Value>,
    /// The token of an `Authorization: Bearer` (or `OAuth`) header.
    pub bearer: Option<String>,
}

impl Call {
    /// Builds a call from a path (with or without version), a query string and a body.
    pub fn parse(
        method: &str,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Call {
        let mut params: HashMap<String, String> = parse_urlencoded(query).into_iter().collect();
        let mut json = None;
        if content_type.starts_with("application/json") {
            json = serde_json::from_slice(body).ok();
        } else if !body.is_empty() {
            // Graph accepts form bodies whatever the declared type.
            params.extend(parse_urlencoded(&String::from_utf8_lossy(body)));
        }
        let bearer = authorization.and_then(|h| {
            let h = h.trim();
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("OAuth "))
                .map(|t| t.trim().to_string())
        });
        Call {
            method: method.to_ascii_uppercase(),
            segments: split_path(path),
            params,
            json,
            bearer,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The access token: an `access_token` parameter wins over the header, as in a batch item.
    fn token(&self) -> Option<&str> {
        self.param("access_token")
            .or(self.bearer.as_deref())
            .filter(|t| !t.is_empty())
    }

    fn is_get(&self) -> bool {
        self.method == "GET"
    }

    /// The endpoint kind, for faults and stats.
    pub fn endpoint(&self) -> Endpoint {
        let s: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        match s.as_slice() {
            [] if self.method == "POST" && self.params.contains_key("batch") => Endpoint::Batch,
            [] => Endpoint::Phone,
            ["debug_token"] => Endpoint::DebugToken,
            ["oauth", "access_token"] => Endpoint::Refresh,
            ["oauth", "revoke"] => Endpoint::Revoke,
            [_, "access_tokens"] => Endpoint::Mint,
            [_, "phone_numbers"] => Endpoint::PhoneNumbers,
            [_, "messages"] => Endpoint::Messages,
            [_] => Endpoint::Phone,
            _ => Endpoint::Other,
        }
    }
}

/// Path segments without an optional `vNN.N` first segment.
fn split_path(path: &str) -> Vec<String> {
    let mut segs: Vec<String> = path.split('/').map(percent_decode).collect();
    // Leading slash: drop the first empty segment only, so `/v21.0//messages` keeps its empty id.
    if segs.first().is_some_and(|s| s.is_empty()) {
        segs.remove(0);
    }
    if segs.first().is_some_and(|s| is_version(s)) {
        segs.remove(0);
    }
    if segs.last().is_some_and(|s| s.is_empty()) {
        segs.pop();
    }
    segs
}

fn is_version(s: &str) -> bool {
    s.strip_prefix('v')
        .and_then(|r| r.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
}

/// Decodes `a=b&c=d` with `+` and `%XX`.
pub(crate) fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// A Graph error envelope under construction (boxed: errors travel in every `Result` here).
#[derive(Clone, Debug)]
struct GraphError(Box<ErrorSpec>);

/// The parts of a Graph error envelope.
#[derive(Clone, Debug)]
struct ErrorSpec {
    status: u16,
    message: String,
    etype: &'static str,
    code: u32,
    subcode: Option<u32>,
    /// Bare errors have no `fbtrace_id` (seen on some 190s).
    bare: bool,
    transient: bool,
    user: Option<(String, String)>,
    details: Option<String>,
    /// Extra response headers (the usage headers of a throttle).
    headers: Vec<(&'static str, String)>,
}

impl GraphError {
    fn new(code: u32, message: impl Into<String>) -> GraphError {
        GraphError(Box::new(ErrorSpec {
            status: 400,
            message: message.into(),
            etype: "OAuthException",
            code,
            subcode: None,
            bare: false,
            transient: false,
            user: None,
            details: None,
            headers: Vec::new(),
        }))
    }
    fn method(code: u32, message: impl Into<String>) -> GraphError {
        let mut e = GraphError::new(code, message);
        e.0.etype = "GraphMethodException";
        e
    }
    fn sub(mut self, s: u32) -> Self {
        self.0.subcode = Some(s);
        self
    }
    fn status(mut self, s: u16) -> Self {
        self.0.status = s;
        self
    }
    fn bare(mut self) -> Self {
        self.0.bare = true;
        self
    }
    fn transient(mut self) -> Self {
        self.0.transient = true;
        self
    }
    fn details(mut self, d: impl Into<String>) -> Self {
        self.0.details = Some(d.into());
        self
    }
    fn user(mut self, title: &str, msg: String) -> Self {
        self.0.user = Some((title.into(), msg));
        self
    }
    fn header(mut self, name: &'static str, value: String) -> Self {
        self.0.headers.push((name, value));
        self
    }

    fn into_reply(self, w: &mut World) -> Reply {
        let this = *self.0;
        let mut e = serde_json::Map::new();
        e.insert("message".into(), json!(this.message));
        e.insert("type".into(), json!(this.etype));
        e.insert("code".into(), json!(this.code));
        if let Some(s) = this.subcode {
            e.insert("error_subcode".into(), json!(s));
        }
        if this.transient {
            e.insert("is_transient".into(), json!(true));
        }
        if let Some((title, msg)) = this.user {
            e.insert("error_user_title".into(), json!(title));
            e.insert("error_user_msg".into(), json!(msg));
        }
        if let Some(d) = this.details {
            e.insert(
                "error_data".into(),
                json!({"messaging_product": "whatsapp", "details": d}),
            );
        }
        if !this.bare {
            e.insert("fbtrace_id".into(), json!(trace_id(w)));
        }
        // Meta escapes slashes in its JSON; serde_json does not, so clients that match raw
        // text instead of parsing would pass here and fail against Meta.
        let body = json!({ "error": e }).to_string().replace('/', "\\/");
        let mut headers = this.headers;
        let kind = match this.code {
            190 | 0 => Some("invalid_token"),
            100 => Some("invalid_request"),
            _ => None,
        };
        if let Some(kind) = kind {
            let msg = this.message.replace('"', "'");
            headers.push((
                "www-authenticate",
                format!("OAuth \"Facebook Platform\" \"{kind}\" \"{msg}\""),
            ));
        }
        Reply {
            status: this.status,
            content_type: JSON_TYPE,
            headers,
            body: body.into_bytes(),
        }
    }
}

fn trace_id(w: &mut World) -> String {
    format!("A{}", w.rng.alnum(22))
}

fn no_token() -> GraphError {
    GraphError::new(104, "An access token is required to request this resource.")
}

fn unparseable(token: &str, whatsapp: bool) -> GraphError {
    if token.starts_with("EAA") {
        GraphError::new(190, "The access token could not be decrypted")
    } else if whatsapp {
        // WhatsApp endpoints answer some dead tokens with this bare envelope.
        GraphError::new(190, "Authentication Error").bare()
    } else {
        GraphError::new(
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }
}

fn bad_signature() -> GraphError {
    GraphError::new(190, "Invalid OAuth access token signature.")
}

fn bad_app_id() -> GraphError {
    GraphError::new(101, "Error validating application. Invalid application ID.")
}

fn bad_client_secret() -> GraphError {
    GraphError::new(1, "Error validating client secret.")
}

fn app_mismatch() -> GraphError {
    GraphError::new(
        100,
        "(#100) The App_id in the input_token did not match the Viewing App",
    )
}

fn permissions_error() -> GraphError {
    GraphError::new(200, "(#200) Permissions error")
}

fn missing_scope() -> GraphError {
    GraphError::new(
        10,
        "(#10) Application does not have permission for this action",
    )
}

fn unsupported(method: &str, id: &str) -> GraphError {
    GraphError::method(
        100,
        format!(
            "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at {GRAPH_DOCS}"
        ),
    )
    .sub(33)
}

fn missing_param(name: &str) -> GraphError {
    GraphError::new(100, format!("(#100) The parameter {name} is required"))
}

/// The message and subcode of a token killed before its expiry. The wording varies between
/// calls, as Meta's does: clients must match on codes.
fn kill_message(w: &mut World, kill: Kill, app_id: &str) -> (String, u32) {
    const P: &str = "Error validating access token: ";
    let (text, sub): (String, u32) = match kill {
        Kill::Revoked => (
            "The session was invalidated explicitly using an API call.".into(),
            466,
        ),
        Kill::Invalidated(460) => {
            let texts = [
                "The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
                "The session has been invalidated because the user has changed the password.",
                "Session does not match current stored session. This may be because the user changed the password since the time the session was created or Facebook has changed the session for security reasons.",
            ];
            (texts[w.rng.below(texts.len())].into(), 460)
        }
        Kill::Invalidated(467) => {
            let texts = [
                "The session is invalid because the user logged out.",
                "The session is invalid. This may be due to a system error.",
            ];
            (texts[w.rng.below(texts.len())].into(), 467)
        }
        Kill::Invalidated(458) => (
            format!("The user has not authorized application {app_id}."),
            458,
        ),
        Kill::Invalidated(459) => (
            "You cannot access the app till you log in to www.facebook.com and follow the instructions given.".into(),
            459,
        ),
        Kill::Invalidated(464) => (
            "Sessions for the user are not allowed because the user is not a confirmed user."
                .into(),
            464,
        ),
        Kill::Invalidated(466) => (
            "The session was invalidated explicitly using an API call.".into(),
            466,
        ),
        Kill::Invalidated(493) => (
            "The access token is invalid since the user hasn't engaged the app in longer than 90 days.".into(),
            493,
        ),
        Kill::Invalidated(s) => ("The session has been invalidated.".into(), s),
    };
    (format!("{P}{text}"), sub)
}

fn expired_message(expires_at: i64, now: i64) -> String {
    format!(
        "Error validating access token: Session has expired on {}. The current time is {}.",
        pacific(expires_at),
        pacific(now)
    )
}

/// The envelope for a known token that no longer works; `None` while it is valid.
fn dead_token_error(w: &mut World, rec: &TokenRec) -> Option<GraphError> {
    let now = w.now();
    match rec.status(now) {
        Status::Valid => None,
        Status::Expired => {
            Some(GraphError::new(190, expired_message(rec.expires_at, now)).sub(463))
        }
        Status::Dead(kill) => {
            let (msg, sub) = kill_message(w, kill, &rec.app_id);
            Some(GraphError::new(190, msg).sub(sub))
        }
    }
}

/// `APP_ID|SECRET`, split.
fn parse_app_token(t: &str) -> Option<(&str, &str)> {
    let (id, secret) = t.split_once('|')?;
    (!id.is_empty() && id.bytes().all(|c| c.is_ascii_digit())).then_some((id, secret))
}

/// Checks `appsecret_proof` (and the time-stamped form with `appsecret_time`).
fn check_proof(
    w: &World,
    call: &Call,
    token: &str,
    app_id: &str,
    required: bool,
) -> Result<(), GraphError> {
    let Some(proof) = call.param("appsecret_proof") else {
        return if required {
            Err(GraphError::method(
                100,
                "API calls from the server require an appsecret_proof argument",
            ))
        } else {
            Ok(())
        };
    };
    let invalid =
        || GraphError::method(100, "Invalid appsecret_proof provided in the API argument");
    let secret = Secret::new(w.secret_of(app_id).ok_or_else(invalid)?);
    let expected = match call.param("appsecret_time") {
        Some(t) => {
            let t: i64 = t.trim().parse().map_err(|_| invalid())?;
            if (w.now() - t).abs() > PROOF_TIME_WINDOW {
                return Err(invalid());
            }
            appsecret_proof(&secret, &format!("{token}|{t}"))
        }
        None => appsecret_proof(&secret, token),
    };
    if proof.trim().eq_ignore_ascii_case(&expected) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// Who made a call.
enum Caller {
    /// The app itself (`APP_ID|SECRET`).
    App,
    /// A user, system-user or page token, valid right now.
    Token(TokenRec),
}

/// Authenticates a call that carries an access token. `whatsapp` endpoints answer 190 with
/// HTTP 401; `force_proof` makes the proof mandatory whatever the app setting (minting).
fn authenticate(
    w: &mut World,
    call: &Call,
    whatsapp: bool,
    force_proof: bool,
) -> Result<Caller, GraphError> {
    let status_190 = if whatsapp { 401 } else { 400 };
    let token = call.token().ok_or_else(no_token)?.to_string();
    if let Some((id, secret)) = parse_app_token(&token) {
        if w.app(id).is_none() {
            return Err(bad_app_id());
        }
        if w.secret_of(id) != Some(secret) {
            return Err(bad_signature().status(status_190));
        }
        check_proof(w, call, &token, id, false)?;
        return Ok(Caller::App);
    }
    let Some(rec) = w.tokens.get(&token).cloned() else {
        return Err(unparseable(&token, whatsapp).status(status_190));
    };
    let required = force_proof || w.app(&rec.app_id).is_some_and(|a| a.require_app_secret);
    check_proof(w, call, &token, &rec.app_id, required)?;
    if let Some(e) = dead_token_error(w, &rec) {
        return Err(e.status(status_190));
    }
    Ok(Caller::Token(rec))
}

/// Routes one non-batch call.
fn dispatch(w: &mut World, call: &Call) -> Reply {
    let result = match call.endpoint() {
        Endpoint::DebugToken => debug_token(w, call),
        Endpoint::Refresh => refresh(w, call),
        Endpoint::Revoke => revoke(w, call),
        Endpoint::Mint => mint(w, call),
        Endpoint::PhoneNumbers => phone_numbers(w, call),
        Endpoint::Messages => messages(w, call),
        Endpoint::Phone => read_object(w, call),
        Endpoint::Batch => Err(GraphError::new(
            100,
            "(#100) A batch cannot contain a batch",
        )),
        Endpoint::Any | Endpoint::Other => Err(GraphError::new(
            2500,
            format!("Unknown path components: /{}", call.segments.join("/")),
        )),
    };
    result.unwrap_or_else(|e| e.into_reply(w))
}

// ---------------------------------------------------------------------------------------------
// debug_token

fn debug_token(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    if !call.is_get() {
        return Err(unsupported(
            &call.method.to_ascii_lowercase(),
            "debug_token",
        ));
    }
    let inspector = call.token().ok_or_else(no_token)?.to_string();
    let viewing_app = match parse_app_token(&inspector) {
        Some((id, secret)) => {
            if w.app(id).is_none() {
                return Err(bad_app_id());
            }
            if w.secret_of(id) != Some(secret) {
                return Err(bad_signature());
            }
            check_proof(w, call, &inspector, id, false)?;
            if w.scenario.usage.enforce && w.usage_percent() > 100 {
                // Meta's hourly app quota ("Rate limiting"): code 4, no Retry-After.
                return Err(
                    GraphError::new(4, "(#4) Application request limit reached").transient()
                );
            }
            id.to_string()
        }
        None => {
            let Some(rec) = w.tokens.get(&inspector).cloned() else {
                return Err(unparseable(&inspector, false));
            };
            if let Some(e) = dead_token_error(w, &rec) {
                return Err(e);
            }
            return Err(GraphError::new(
                100,
                "(#100) You must provide an app access token, or a user access token that is an owner or developer of the app",
            ));
        }
    };
    let input = call
        .param("input_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("input_token"))?
        .to_string();
    let data = if let Some((id, secret)) = parse_app_token(&input) {
        match w.app(id) {
            None => invalid_data("Invalid OAuth access token - Cannot parse access token"),
            Some(_) if id != viewing_app => return Err(app_mismatch()),
            Some(app) if w.secret_of(id) == Some(secret) => json!({
                "app_id": id,
                "type": "APP",
                "application": app.name,
                "is_valid": true,
                "scopes": [],
            }),
            Some(_) => invalid_data("Invalid OAuth access token signature."),
        }
    } else if let Some(rec) = w.tokens.get(&input).cloned() {
        if rec.app_id != viewing_app {
            return Err(app_mismatch());
        }
        token_data(w, &rec)
    } else if input.starts_with("EAA") {
        invalid_data("The access token could not be decrypted")
    } else {
        invalid_data("Invalid OAuth access token - Cannot parse access token")
    };
    let mut data = data;
    if let Value::Object(map) = &mut data {
        for field in &w.scenario.quirks.omit_debug_fields {
            map.remove(field);
        }
    }
    Ok(Reply::json(200, &json!({ "data": data })))
}

fn invalid_data(message: &str) -> Value {
    json!({"error": {"code": 190, "message": message}, "is_valid": false, "scopes": []})
}

/// debug_token's `data` for a known token.
fn token_data(w: &mut World, rec: &TokenRec) -> Value {
    let now = w.now();
    let application = w
        .app(&rec.app_id)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let mut d = serde_json::Map::new();
    d.insert("app_id".into(), json!(rec.app_id));
    d.insert("type".into(), json!(rec.kind.as_str()));
    d.insert("application".into(), json!(application));
    d.insert(
        "data_access_expires_at".into(),
        json!(rec.data_access_expires_at),
    );
    d.insert("expires_at".into(), json!(rec.expires_at));
    d.insert("issued_at".into(), json!(rec.issued_at));
    match rec.kind {
        TokenKind::Page => d.insert("profile_id".into(), json!(rec.user_id)),
        _ => d.insert("user_id".into(), json!(rec.user_id)),
    };
    match rec.status(now) {
        Status::Valid => {
            d.insert("is_valid".into(), json!(true));
            d.insert("scopes".into(), json!(rec.scopes));
            // Meta omits `target_ids` when a permission was granted in general (its own
            // SYSTEM_USER example on "WhatsApp permissions"), switchable as a quirk.
            let general = w.scenario.quirks.omit_target_ids && rec.kind == TokenKind::SystemUser;
            let granular: Vec<Value> = rec
                .scopes
                .iter()
                .map(|s| {
                    if s.starts_with("whatsapp_business_") && !rec.wabas.is_empty() && !general {
                        // Meta's order is not stable: clients must test membership.
                        let mut ids = rec.wabas.clone();
                        w.rng.shuffle(&mut ids);
                        json!({"scope": s, "target_ids": ids})
                    } else {
                        json!({"scope": s})
                    }
                })
                .collect();
            d.insert("granular_scopes".into(), json!(granular));
        }
        Status::Expired => {
            d.insert("is_valid".into(), json!(false));
            d.insert("scopes".into(), json!(rec.scopes));
            d.insert(
                "error".into(),
                json!({"code": 190, "message": expired_message(rec.expires_at, now), "subcode": 463}),
            );
        }
        Status::Dead(kill) => {
            let (message, subcode) = kill_message(w, kill, &rec.app_id);
            d.insert("is_valid".into(), json!(false));
            d.insert("scopes".into(), json!([]));
            d.insert(
                "error".into(),
                json!({"code": 190, "message": message, "subcode": subcode}),
            );
            // Invalidated tokens sometimes show `expires_at: 0`, which is not "never expires".
            if matches!(kill, Kill::Invalidated(_)) && w.rng.below(2) == 0 {
                d.insert("expires_at".into(), json!(0));
            }
        }
    }
    Value::Object(d)
}

// ---------------------------------------------------------------------------------------------
// oauth: refresh and revoke

/// Checks `client_id` / `client_secret` and returns the app id.
fn client_app(w: &World, call: &Call) -> Result<String, GraphError> {
    let id = call
        .param("client_id")
        .ok_or_else(|| missing_param("client_id"))?;
    if w.app(id).is_none() {
        return Err(bad_app_id());
    }
    match call.param("client_secret") {
        Some(s) if w.secret_of(id) == Some(s) => Ok(id.to_string()),
        _ => Err(bad_client_secret()),
    }
}

fn refresh(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let app_id = client_app(w, call)?;
    match call.param("grant_type") {
        Some("client_credentials") => {
            let secret = w.secret_of(&app_id).unwrap_or_default().to_string();
            return Ok(Reply::json(
                200,
                &json!({"access_token": format!("{app_id}|{secret}"), "token_type": "bearer"}),
            ));
        }
        Some("fb_exchange_token") => {}
        Some(other) => {
            return Err(GraphError::new(
                100,
                format!("(#100) Unsupported grant_type: {other}"),
            ));
        }
        None => return Err(missing_param("grant_type")),
    }
    let old = call
        .param("fb_exchange_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("fb_exchange_token"))?;
    let Some(rec) = w.tokens.get(old).cloned() else {
        return Err(unparseable(old, false));
    };
    if rec.app_id != app_id {
        return Err(app_mismatch());
    }
    if let Some(e) = dead_token_error(w, &rec) {
        return Err(e);
    }
    // Strict: only user and system-user tokens that expire are exchanged ("System users":
    // refresh is for the 60-day tokens). A client that would send a page token or a
    // never-expiring one (which a lenient server trades for a 60-day one) fails here first.
    if matches!(rec.kind, TokenKind::Page | TokenKind::App) {
        return Err(GraphError::new(
            100,
            format!(
                "(#100) A {} access token cannot be exchanged with fb_exchange_token",
                rec.kind.as_str().to_ascii_lowercase().replace('_', " ")
            ),
        ));
    }
    if rec.expires_at == 0 {
        return Err(GraphError::new(
            100,
            "(#100) This access token does not expire and cannot be refreshed",
        ));
    }
    let new = if w.scenario.quirks.refresh_same_string {
        // Seen in the field for user tokens: the same string comes back, living longer.
        let now = w.now();
        let rec = w.tokens.get_mut(old).expect("looked up above");
        rec.expires_at = super::world::round_up_hour(now + 60 * 86_400);
        rec.clone()
    } else {
        w.reissue_60d(&rec)
    };
    w.stats.refreshed += 1;
    let expires_in = new.expires_at - w.now();
    Ok(Reply::json(
        200,
        &json!({"access_token": new.value, "token_type": "bearer", "expires_in": expires_in}),
    ))
}

/// `oauth/revoke`, strict as its page: `client_id`, the caller's app and the revoked token's
/// app "must all be the same", and a user or system-user caller needs its `appsecret_proof`
/// when the app requires one ("Require App Secret").
fn revoke(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let app_id = client_app(w, call)?;
    let target = call
        .param("revoke_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("revoke_token"))?
        .to_string();
    if let Some(caller) = call.token() {
        let caller = caller.to_string();
        match parse_app_token(&caller) {
            Some((id, _)) if id != app_id => return Err(app_mismatch()),
            Some(_) => {}
            None => match w.tokens.get(&caller).cloned() {
                None => return Err(unparseable(&caller, false)),
                Some(rec) => {
                    if rec.app_id != app_id {
                        return Err(app_mismatch());
                    }
                    let required = w.app(&rec.app_id).is_some_and(|a| a.require_app_secret);
                    check_proof(w, call, &caller, &rec.app_id, required)?;
                    if let Some(e) = dead_token_error(w, &rec) {
                        // Revoking a token with itself after it died still fails like Meta.
                        if caller != target {
                            return Err(e);
                        }
                    }
                }
            },
        }
    }
    match w.tokens.get_mut(&target) {
        None => return Err(unparseable(&target, false)),
        Some(rec) if rec.app_id != app_id => return Err(app_mismatch()),
        Some(rec) => rec.kill = Some(Kill::Revoked),
    }
    w.stats.revoked += 1;
    // The documented answer, trailing comma included: clients must parse leniently.
    Ok(Reply::raw(200, JSON_TYPE, "{\"success\":\"true\",}"))
}

// ---------------------------------------------------------------------------------------------
// minting

fn mint(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let su_id = call.segments[0].clone();
    if call.is_get() {
        return Err(unsupported("get", &format!("{su_id}/access_tokens")));
    }
    let caller = match authenticate(w, call, false, true)? {
        Caller::Token(rec) => rec,
        Caller::App => {
            return Err(GraphError::new(
                190,
                "(#190) This method must be called with a user or system user access token",
            ));
        }
    };
    let Some(su) = w
        .scenario
        .system_users
        .iter()
        .find(|u| u.id == su_id)
        .cloned()
    else {
        return Err(unsupported("post", &su_id));
    };
    // Strict: only an admin system user of the same business may mint ("System users:
    // install apps and generate tokens"); an employee system user, a person or a page may not.
    let admin_ok = caller.kind == TokenKind::SystemUser
        && caller.user_id.as_deref().is_some_and(|id| {
            w.scenario
                .system_users
                .iter()
                .any(|u| u.id == id && u.admin)
        });
    if !admin_ok {
        return Err(permissions_error());
    }
    let app_id = call
        .param("business_app")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing_param("business_app"))?
        .to_string();
    if w.app(&app_id).is_none() {
        return Err(GraphError::new(
            100,
            "(#100) Param business_app must be a valid application ID",
        ));
    }
    if !su.apps.contains(&app_id) {
        return Err(GraphError::new(100, "(#100) Invalid parameter").user(
            "App not installed",
            format!(
                "The app {app_id} is not installed for system user {su_id}. Add the app to the system user's assets in Business Settings, then try again."
            ),
        ));
    }
    let scopes: Vec<String> = match call.param("scope") {
        Some(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        _ => super::scenario::WHATSAPP_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    if let Some(unknown) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(GraphError::new(
            100,
            format!("(#100) Invalid scope: {unknown}"),
        ));
    }
    let sixty = call.param("set_token_expires_in_60_days") == Some("true");
    if !sixty && w.scenario.quirks.require_expiring_tokens {
        // "Some businesses must use expiring tokens ... omitting this parameter or setting it
        // to false results in an error" (the code is not documented: 100 is a guess).
        return Err(GraphError::new(
            100,
            "(#100) This business requires expiring system user access tokens: set set_token_expires_in_60_days to true",
        ));
    }
    let spec = super::scenario::TokenSpec {
        kind: TokenKind::SystemUser,
        app_id: Some(app_id),
        scopes,
        wabas: su.wabas.clone(),
        lifetime: if sixty {
            super::scenario::Lifetime::Days60
        } else {
            super::scenario::Lifetime::Never
        },
        issued_ago_secs: 0,
        user_id: Some(su_id),
    };
    let value = w.issue(&spec);
    w.stats.minted += 1;
    Ok(Reply::json(200, &json!({ "access_token": value })))
}

// ---------------------------------------------------------------------------------------------
// WhatsApp assets

/// Parses `fields=` against the fields a node has; `None` when none were asked for.
fn requested_fields(
    call: &Call,
    node: &str,
    known: &[&str],
) -> Result<Option<Vec<String>>, GraphError> {
    let Some(f) = call.param("fields").filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    let fields: Vec<String> = f.split(',').map(|x| x.trim().to_string()).collect();
    for x in &fields {
        if !known.contains(&x.as_str()) {
            return Err(GraphError::new(
                100,
                format!("(#100) Tried accessing nonexisting field ({x}) on node type ({node})"),
            ));
        }
    }
    Ok(Some(fields))
}

fn pick(all: Value, fields: Option<Vec<String>>) -> Value {
    let (Some(fields), Value::Object(map)) = (fields, &all) else {
        return all;
    };
    let mut out = serde_json::Map::new();
    for f in fields.iter().map(String::as_str).chain(["id"]) {
        if let Some(v) = map.get(f) {
            out.insert(f.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// Business-use-case throttling (the `business_throttle_until` quirk): calls on the business's
/// assets made with a user or system-user token are refused with code 80008 and
/// `X-Business-Use-Case-Usage` giving `estimated_time_to_regain_access` in minutes. No
/// `Retry-After`: Meta documents none.
fn business_throttle(w: &World, caller: &Caller) -> Result<(), GraphError> {
    let until = w.scenario.quirks.business_throttle_until;
    let now = w.now();
    if !matches!(caller, Caller::Token(_)) || until <= now {
        return Ok(());
    }
    let minutes = (until - now + 59) / 60;
    let waba = w
        .scenario
        .wabas
        .first()
        .map(|x| x.id.clone())
        .unwrap_or_else(|| "0".into());
    let usage = json!({ waba: [{
        "type": "whatsapp_business_management",
        "call_count": 100,
        "total_cputime": 12,
        "total_time": 20,
        "estimated_time_to_regain_access": minutes,
    }]});
    Err(GraphError::new(
        80008,
        "(#80008) There have been too many calls to this WhatsApp Business account. Wait a bit and try again.",
    )
    .header("x-business-use-case-usage", usage.to_string()))
}

/// Checks that a caller may use a WABA with `scope`.
fn check_asset(caller: &Caller, waba: &str, scope: &str) -> Result<(), GraphError> {
    match caller {
        Caller::App => Err(permissions_error()),
        Caller::Token(rec) if !rec.has_scope(scope) => Err(missing_scope()),
        Caller::Token(rec) if !rec.wabas.iter().any(|w| w == waba) => Err(permissions_error()),
        Caller::Token(_) => Ok(()),
    }
}

const PHONE_FIELDS: [&str; 6] = [
    "id",
    "display_phone_number",
    "verified_name",
    "quality_rating",
    "code_verification_status",
    "name_status",
];

fn read_object(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let id = call.segments.first().cloned().unwrap_or_default();
    if !call.is_get() {
        return Err(unsupported(&call.method.to_ascii_lowercase(), &id));
    }
    let caller = authenticate(w, call, false, false)?;
    business_throttle(w, &caller)?;
    for waba in &w.scenario.wabas {
        if waba.id == id {
            check_asset(&caller, &waba.id, super::scenario::WHATSAPP_SCOPES[0])?;
            let fields = requested_fields(
                call,
                "WhatsAppBusinessAccount",
                &["id", "name", "timezone_id", "account_review_status"],
            )?;
            let all = json!({"id": waba.id, "name": waba.name, "timezone_id": "1", "account_review_status": "APPROVED"});
            return Ok(Reply::json(200, &pick(all, fields)));
        }
        if let Some(p) = waba.phones.iter().find(|p| p.id == id) {
            check_asset(&caller, &waba.id, super::scenario::WHATSAPP_SCOPES[0])?;
            let fields = requested_fields(call, "WhatsAppBusinessPhoneNumber", &PHONE_FIELDS)?;
            let all = json!({
                "id": p.id,
                "display_phone_number": p.display_phone_number,
                "verified_name": p.verified_name,
                "quality_rating": p.quality_rating,
                "code_verification_status": p.code_verification_status,
                "name_status": p.name_status,
            });
            return Ok(Reply::json(200, &pick(all, fields)));
        }
    }
    if let Some(a) = w.app(&id) {
        return Ok(Reply::json(200, &json!({"id": a.id, "name": a.name})));
    }
    if let Some(u) = w.scenario.system_users.iter().find(|u| u.id == id) {
        return Ok(Reply::json(200, &json!({"id": u.id, "name": u.name})));
    }
    Err(unsupported("get", &id))
}

fn phone_numbers(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let id = call.segments[0].clone();
    if !call.is_get() {
        return Err(unsupported(&call.method.to_ascii_lowercase(), &id));
    }
    let caller = authenticate(w, call, false, false)?;
    business_throttle(w, &caller)?;
    if w.scenario
        .wabas
        .iter()
        .any(|wb| wb.phones.iter().any(|p| p.id == id))
    {
        // A phone-number id where the WABA id belongs: the node exists, the edge does not.
        return Err(GraphError::new(
            100,
            "(#100) Tried accessing nonexisting field (phone_numbers) on node type (WhatsAppBusinessPhoneNumber)",
        ));
    }
    let Some(waba) = w.scenario.wabas.iter().find(|wb| wb.id == id).cloned() else {
        return Err(unsupported("get", &id));
    };
    check_asset(&caller, &waba.id, super::scenario::WHATSAPP_SCOPES[0])?;
    let data: Vec<Value> = waba
        .phones
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "display_phone_number": p.display_phone_number,
                "verified_name": p.verified_name,
                "quality_rating": p.quality_rating,
            })
        })
        .collect();
    let before = w.rng.alnum(64);
    let after = w.rng.alnum(64);
    Ok(Reply::json(
        200,
        &json!({"data": data, "paging": {"cursors": {"before": before, "after": after}}}),
    ))
}

/// Reads a message field that may come as JSON or as a form value holding JSON.
fn message_body(call: &Call) -> Value {
    if let Some(v) = &call.json {
        return v.clone();
    }
    let mut m = serde_json::Map::new();
    for (k, v) in &call.params {
        let parsed = match k.as_str() {
            "text" | "template" => serde_json::from_str(v).unwrap_or(json!(v)),
            _ => json!(v),
        };
        m.insert(k.clone(), parsed);
    }
    Value::Object(m)
}

fn messages(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let phone_id = call.segments[0].clone();
    if call.is_get() {
        return Err(unsupported("get", &format!("{phone_id}/messages")));
    }
    let caller = authenticate(w, call, true, false)?;
    business_throttle(w, &caller)?;
    let Some(waba) = w
        .scenario
        .wabas
        .iter()
        .find(|wb| wb.phones.iter().any(|p| p.id == phone_id))
        .map(|wb| wb.id.clone())
    else {
        return Err(unsupported("post", &phone_id));
    };
    check_asset(&caller, &waba, super::scenario::WHATSAPP_SCOPES[1])?;
    let body = message_body(call);
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    if s("messaging_product").as_deref() != Some("whatsapp") {
        return Err(missing_param("messaging_product"));
    }
    let to = s("to")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("to"))?;
    let digits_of = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
    let digits = digits_of(&to);
    let recipients = &w.scenario.recipients;
    // Compare digits only: `+1 555-000-1111` in a scenario means 15550001111.
    if !recipients.is_empty() && !recipients.iter().any(|r| digits_of(r) == digits) {
        return Err(
            GraphError::new(131030, "(#131030) Recipient phone number not in allowed list").details(
                "Recipient phone number not in allowed list: Add recipient phone number to recipient list and try again.",
            ),
        );
    }
    let kind = s("type").unwrap_or_else(|| "text".into());
    let (text, template, language) = match kind.as_str() {
        "text" => {
            let text = body
                .pointer("/text/body")
                .and_then(Value::as_str)
                .ok_or_else(|| missing_param("text['body']"))?;
            (Some(text.to_string()), None, None)
        }
        "template" => {
            let name = body
                .pointer("/template/name")
                .and_then(Value::as_str)
                .ok_or_else(|| missing_param("template['name']"))?
                .to_string();
            let lang = body
                .pointer("/template/language/code")
                .and_then(Value::as_str)
                .unwrap_or("en_US")
                .to_string();
            let known = w
                .scenario
                .templates
                .iter()
                .any(|t| t.name == name && t.language == lang);
            if !known {
                return Err(GraphError::new(
                    132001,
                    "(#132001) Template name does not exist in the translation",
                )
                .details(format!("template name ({name}) does not exist in {lang}")));
            }
            (None, Some(name), Some(lang))
        }
        other => {
            return Err(GraphError::new(
                100,
                format!("(#100) Param type must be one of {{text, template}}, got {other}"),
            ));
        }
    };
    let id = format!("wamid.HBgL{}", w.rng.alnum(48));
    let token_fingerprint = call
        .token()
        .map(|t| Fingerprint::of(t).to_string())
        .unwrap_or_default();
    let sent_at = w.now();
    w.messages.push(SentMessage {
        id: id.clone(),
        phone_number_id: phone_id,
        to: to.clone(),
        kind,
        body: text,
        template,
        language,
        sent_at,
        token_fingerprint,
    });
    w.stats.messages_sent += 1;
    Ok(Reply::json(
        200,
        &json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": digits}],
            "messages": [{"id": id}],
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// faults, batches and the common headers

/// What a pending fault does to a call.
enum Pre {
    Normal,
    Truncate,
    Answer(Reply),
    /// An error that quotes the request ([`Fault::Echo`]): built from the call.
    Echo(u32),
}

/// Counts the call and applies the next matching fault (sleeping for delays).
async fn pre(shared: &Shared, endpoint: Endpoint) -> Pre {
    let (fault, reply) = {
        let mut w = lock(shared);
        w.count(endpoint);
        let fault = w.take_fault(endpoint);
        let reply = fault.as_ref().and_then(|f| fault_reply(&mut w, f));
        (fault, reply)
    };
    match (fault, reply) {
        (_, Some(r)) => Pre::Answer(r),
        (Some(Fault::Delay { ms, .. }), None) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Pre::Normal
        }
        (Some(Fault::Truncated { .. }), None) => Pre::Truncate,
        (Some(Fault::Echo { code, .. }), None) => Pre::Echo(code),
        _ => Pre::Normal,
    }
}

/// The answer a fault replaces the real one with; `None` for delay and truncation.
fn fault_reply(w: &mut World, fault: &Fault) -> Option<Reply> {
    Some(match *fault {
        Fault::ServerError { status, code, .. } => {
            let e = match code {
                1 => GraphError::new(1, "An unknown error has occurred."),
                2 => GraphError::new(
                    2,
                    "An unexpected error has occurred. Please retry your request later.",
                )
                .transient(),
                131000 => GraphError::new(131000, "(#131000) Something went wrong")
                    .details("Something went wrong"),
                c => GraphError::new(c, format!("(#{c}) Service temporarily unavailable"))
                    .transient(),
            };
            e.status(status).into_reply(w)
        }
        Fault::Html { .. } => Reply::raw(
            502,
            "text/html",
            "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        ),
        Fault::Empty { status, .. } => Reply::raw(status, JSON_TYPE, ""),
        Fault::RateLimit {
            code,
            retry_after_secs,
            ..
        } => {
            let e = match code {
                4 => GraphError::new(4, "(#4) Application request limit reached").transient(),
                17 => GraphError::new(17, "(#17) User request limit reached"),
                32 => GraphError::new(32, "(#32) Page request limit reached"),
                613 => GraphError::new(
                    613,
                    "(#613) Calls to this api have exceeded the rate limit.",
                ),
                80007 => GraphError::new(80007, "(#80007) Rate limit issues")
                    .details("WhatsApp Business Account rate limit hit"),
                130429 => GraphError::new(130429, "(#130429) Rate limit hit")
                    .details("Cloud API message throughput has been reached."),
                c => GraphError::new(c, format!("(#{c}) Rate limit hit")),
            };
            let waba = w
                .scenario
                .wabas
                .first()
                .map(|x| x.id.clone())
                .unwrap_or_else(|| "0".into());
            let minutes = retry_after_secs.div_ceil(60);
            let usage = json!({ waba: [{
                "type": "whatsapp_business_management",
                "call_count": 100,
                "total_cputime": 28,
                "total_time": 36,
                "estimated_time_to_regain_access": minutes,
            }]});
            let mut r = e.into_reply(w);
            r.headers
                .push(("x-business-use-case-usage", usage.to_string()));
            r.headers
                .push(("retry-after", retry_after_secs.to_string()));
            r.headers.push((
                "x-app-usage",
                json!({"call_count": 100, "total_time": 36, "total_cputime": 28}).to_string(),
            ));
            r
        }
        Fault::AuthException { .. } => GraphError::new(0, "AuthException")
            .details("We were unable to authenticate the app user.")
            .status(401)
            .into_reply(w),
        Fault::Delay { .. } | Fault::Truncated { .. } | Fault::Echo { .. } => return None,
    })
}

/// [`Fault::Echo`]'s answer: an envelope that quotes the whole request back.
fn echo(w: &mut World, call: &Call, code: u32) -> Reply {
    let mut params: Vec<String> = call
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    params.sort();
    let bearer = call.bearer.clone().unwrap_or_default();
    let encoded: String = url::form_urlencoded::byte_serialize(bearer.as_bytes()).collect();
    let quoted = format!(
        "{} /{}?{} Authorization: Bearer {bearer} ({encoded}, {})",
        call.method,
        call.segments.join("/"),
        params.join("&"),
        crate::scrub::base64(bearer.as_bytes())
    );
    let mut e = GraphError::new(code, format!("(#{code}) Invalid request: {quoted}"))
        .user("Request rejected", quoted.clone())
        .details(quoted);
    if code == 2 {
        e = e.transient();
    }
    e.into_reply(w)
}

fn truncate(mut r: Reply) -> Reply {
    let half = r.body.len() / 2;
    r.body.truncate(half);
    r.status = 200;
    r
}

/// Evaluates one call (no batch) with faults applied.
async fn handle_one(shared: &Shared, call: &Call) -> Reply {
    match pre(shared, call.endpoint()).await {
        Pre::Answer(r) => r,
        Pre::Echo(code) => echo(&mut lock(shared), call, code),
        Pre::Normal => dispatch(&mut lock(shared), call),
        Pre::Truncate => truncate(dispatch(&mut lock(shared), call)),
    }
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        lock(shared).arrive();
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.0).depart();
    }
}

/// Answers a Graph request: latency (once per HTTP request, so a batch of 50 costs one round
/// trip), faults, batch or single call, then the common headers.
pub(crate) async fn handle(shared: &Shared, call: Call) -> Reply {
    let _in_flight = InFlight::enter(shared);
    let latency = lock(shared).scenario.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let reply = if call.endpoint() == Endpoint::Batch {
        match pre(shared, Endpoint::Batch).await {
            Pre::Answer(r) => r,
            Pre::Echo(code) => echo(&mut lock(shared), &call, code),
            Pre::Normal => batch(shared, &call).await,
            Pre::Truncate => truncate(batch(shared, &call).await),
        }
    } else {
        handle_one(shared, &call).await
    };
    finish(shared, reply)
}

/// Adds the headers every Graph answer carries.
fn finish(shared: &Shared, mut r: Reply) -> Reply {
    let mut w = lock(shared);
    if !r.headers.iter().any(|(k, _)| *k == "x-app-usage") {
        // Time and CPU run below the call count, so the call count is what a client sees rise.
        let calls = w.usage_percent();
        let usage = json!({
            "call_count": calls,
            "total_time": calls * 3 / 4,
            "total_cputime": calls / 2,
        });
        r.headers.push(("x-app-usage", usage.to_string()));
    }
    r.headers.push(("x-fb-trace-id", w.rng.alnum(11)));
    r.headers
        .push(("x-fb-request-id", format!("A{}", w.rng.alnum(22))));
    r.headers.push(("cache-control", "no-store".into()));
    r.headers.push(("facebook-api-version", "v21.0".into()));
    r
}

async fn batch(shared: &Shared, call: &Call) -> Reply {
    let items: Vec<Value> = match call.param("batch").map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Array(items))) => items,
        _ => {
            let mut w = lock(shared);
            return GraphError::new(100, "(#100) The parameter batch must be a JSON array")
                .into_reply(&mut w);
        }
    };
    {
        let mut w = lock(shared);
        w.stats.batch_calls += 1;
        if items.len() > MAX_BATCH {
            let mut e = GraphError::new(
                100,
                format!("Too many requests in batch message. Maximum batch size is {MAX_BATCH}"),
            );
            e.0.etype = "GraphBatchException";
            return e.into_reply(&mut w);
        }
    }
    // `include_headers=false` drops each item's headers, as at Meta.
    let with_headers = call.param("include_headers") != Some("false");
    // Written out directly (no `Value` tree): benchmarks run this for 10,000 items a pass.
    let mut out = String::with_capacity(items.len() * 1024);
    out.push('[');
    for (n, item) in items.iter().enumerate() {
        let item_call = batch_item(call, item);
        let r = if item_call.endpoint() == Endpoint::Batch {
            let mut w = lock(shared);
            dispatch(&mut w, &item_call)
        } else {
            handle_one(shared, &item_call).await
        };
        if n > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"code\":{}", r.status));
        if with_headers {
            let mut headers = vec![
                json!({"name": "Content-Type", "value": r.content_type}),
                json!({"name": "Cache-Control", "value": "no-store"}),
            ];
            for (k, v) in &r.headers {
                headers.push(json!({"name": header_title(k), "value": v}));
            }
            out.push_str(",\"headers\":");
            out.push_str(&Value::Array(headers).to_string());
        }
        out.push_str(",\"body\":");
        out.push_str(&serde_json::to_string(&String::from_utf8_lossy(&r.body)).unwrap_or_default());
        out.push('}');
    }
    out.push(']');
    Reply {
        status: 200,
        content_type: JSON_TYPE,
        headers: Vec::new(),
        body: out.into_bytes(),
    }
}

/// `www-authenticate` as `WWW-Authenticate`, the way batch items spell header names.
fn header_title(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) if p == "www" => f.to_ascii_uppercase().to_string() + "WW",
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Turns a batch item into a call; the top-level token and proof apply unless the item has its own.
///
/// Strict as Meta's "Batch requests" page: "You must include an access token as a top level
/// parameter". Only the top-level *form parameter* counts: an `Authorization` header on the
/// batch request is not handed down to its items (whether Meta reads it there is not
/// documented, so a client that relies on it must fail here first).
fn batch_item(top: &Call, item: &Value) -> Call {
    let method = item
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("GET")
        .to_string();
    let url = item
        .get("relative_url")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let body = item.get("body").and_then(Value::as_str).unwrap_or("");
    let mut call = Call::parse(&method, path, query, "", body.as_bytes(), None);
    for k in ["access_token", "appsecret_proof", "appsecret_time"] {
        if !call.params.contains_key(k)
            && let Some(v) = top.params.get(k)
        {
            call.params.insert(k.into(), v.clone());
        }
    }
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_their_version() {
        assert_eq!(split_path("/v21.0/debug_token"), vec!["debug_token"]);
        assert_eq!(split_path("/debug_token"), vec!["debug_token"]);
        assert_eq!(split_path("v19.0/123/messages"), vec!["123", "messages"]);
        assert!(split_path("/v21.0/").is_empty());
        assert_eq!(split_path("/v21.0//messages"), vec!["", "messages"]);
    }

    #[test]
    fn urlencoded_decodes_plus_and_percent() {
        let p = parse_urlencoded("a=1+2&b=%7C%2F&c");
        assert_eq!(p[0], ("a".into(), "1 2".into()));
        assert_eq!(p[1], ("b".into(), "|/".into()));
        assert_eq!(p[2], ("c".into(), "".into()));
    }

    #[test]
    fn header_names_are_title_cased() {
        assert_eq!(header_title("www-authenticate"), "WWW-Authenticate");
        assert_eq!(header_title("x-app-usage"), "X-App-Usage");
    }
}
