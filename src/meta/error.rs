//! Graph errors, sorted by what the caller does next. Pure: no IO.
//!
//! Meta's error envelope (reference section 2) is turned into one of four outcomes. They must
//! never be confused: a timeout reported as "token dead" wakes someone at 3 a.m. for nothing, and
//! a wrong app secret reported as "token dead" makes tokenwarden rotate a healthy token.
//! Classification looks at codes, subcodes, the HTTP status and the envelope's `type`, never
//! at message text, which Meta rewords freely (section 8).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// What a failed Graph call means for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The monitored token is dead (expired, invalidated, revoked): rotate it or have a person
    /// make a new one.
    #[error("the token is dead: {}", dead_reason(.0))]
    TokenDead(ApiError),
    /// Configuration or permissions are wrong (missing asset, wrong id, scope, proof, a blocked
    /// app): a person must fix it; retrying or rotating will not help.
    #[error("configuration problem: {0}")]
    Misconfigured(ApiError),
    /// tokenwarden's own app credentials are wrong (app secret reset, token of another app):
    /// fix tokenwarden's config. Says nothing about the monitored token; never rotate on it.
    #[error("tokenwarden's own app credentials were refused: {0}")]
    OwnCredentials(ApiError),
    /// Meta or the network failed this time: retry later. Never a verdict on the token.
    #[error("Graph is unavailable: {0}")]
    Transient(Transient),
}

/// A Meta error envelope, with what is needed to explain and classify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the response (200 for errors inside `debug_token`'s `data`).
    pub status: u16,
    /// Meta's `code`.
    pub code: i64,
    /// `error_subcode` (envelope) or `subcode` (`debug_token` data).
    pub subcode: Option<i64>,
    /// The envelope's `type`, such as `OAuthException`.
    pub kind: Option<String>,
    /// Meta's message, for people, followed by `error_user_title` and `error_user_msg` in
    /// parentheses when Meta sends them. Never used to classify.
    pub message: String,
    /// WhatsApp's `error_data.details`.
    pub details: Option<String>,
    /// Meta's trace id, for support tickets.
    pub fbtrace_id: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "code {}", self.code)?;
        if let Some(s) = self.subcode {
            write!(f, "/{s}")?;
        }
        write!(f, " (HTTP {}): {}", self.status, self.message)?;
        if let Some(d) = &self.details {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// Why a call failed transiently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Transient {
    /// Connection refused, reset, DNS, TLS.
    #[error("network error: {0}")]
    Network(String),
    /// No answer within the timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// A body that is not Graph JSON (a proxy's HTML page, nothing, half a document).
    #[error("HTTP {status} with {what} instead of Graph JSON")]
    BadBody {
        /// HTTP status.
        status: u16,
        /// "an HTML page", "an empty body", "a truncated or invalid JSON body".
        what: &'static str,
    },
    /// A rate limit: wait at least `retry_after` when known. The wait is in the message, so a
    /// check's verdict tells on-call when Meta will answer again.
    #[error("rate limited: {api}{}", wait_note(.retry_after))]
    RateLimited {
        /// The envelope.
        api: ApiError,
        /// How long Meta asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// A Meta error that Meta documents as temporary.
    #[error("{0}")]
    Api(ApiError),
    /// A 3xx: something between tokenwarden and Graph (a gateway, a captive portal) sent the
    /// request elsewhere. Never followed: the request carries the app secret and tokens.
    #[error(
        "HTTP {status} redirecting to {host}; redirects are not followed (a gateway or captive portal between here and Graph?)"
    )]
    Redirected {
        /// HTTP status.
        status: u16,
        /// The host of the `Location`, never its path or query.
        host: String,
    },
    /// A body larger than any Graph answer: read up to the limit, then dropped.
    #[error("HTTP {status} with a body larger than {} MiB, not read further", .limit / (1024 * 1024))]
    TooLarge {
        /// HTTP status.
        status: u16,
        /// The limit, in bytes.
        limit: usize,
    },
}

/// `; Meta asks to wait 60s` when Meta said how long, else nothing.
fn wait_note(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(w) => format!("; Meta asks to wait {}s", w.as_secs()),
        None => String::new(),
    }
}

/// The call being classified: the same code means different things depending on whose
/// credentials the call carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `debug_token`, authenticated with the app token: envelope errors are about the inspector.
    Inspect,
    /// A call authenticated with the monitored token (phone reads, messages).
    WithToken,
    /// Calls carrying the app's `client_secret` (refresh, revoke, the Instagram and Threads
    /// exchange, Threads' app access token).
    WithAppSecret,
}

/// Rate limits: app, user, page, application, custom, WhatsApp throughput and pair rate.
const RATE_LIMIT_CODES: &[i64] = &[4, 17, 32, 341, 613, 80007, 130429, 131056];
/// Business Use Case rate limits (80000 to 80014 are documented, 80007 is WhatsApp's).
const BUC_RATE_LIMITS: std::ops::RangeInclusive<i64> = 80_000..=80_099;
/// Temporary service errors.
const TEMPORARY_CODES: &[i64] = &[1, 2, 131000, 131016];

#[derive(Deserialize)]
struct Envelope {
    error: WireError,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<serde_json::Value>,
    error_subcode: Option<serde_json::Value>,
    subcode: Option<serde_json::Value>,
    is_transient: Option<bool>,
    error_user_title: Option<String>,
    error_user_msg: Option<String>,
    error_data: Option<serde_json::Value>,
    fbtrace_id: Option<String>,
}

/// Reads a number that Meta may send as a JSON number or a string.
pub(crate) fn loose_i64(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Parses a non-2xx (or error-carrying) response body into an [`ApiError`], or explains why
/// it is not Graph JSON.
pub fn parse_error_body(status: u16, body: &[u8]) -> Result<(ApiError, bool), Transient> {
    let env: Envelope = serde_json::from_slice(body).map_err(|_| bad_body(status, body))?;
    let e = env.error;
    let details = e
        .error_data
        .as_ref()
        .and_then(|d| d.get("details"))
        .and_then(|d| d.as_str())
        .map(str::to_string);
    let api = ApiError {
        status,
        code: e.code.as_ref().and_then(loose_i64).unwrap_or(-1),
        subcode: e
            .error_subcode
            .as_ref()
            .or(e.subcode.as_ref())
            .and_then(loose_i64),
        kind: e.kind,
        message: with_user_message(e.message, e.error_user_title, e.error_user_msg),
        details,
        fbtrace_id: e.fbtrace_id,
    };
    Ok((api, e.is_transient.unwrap_or(false)))
}

/// Meta's `message` is often generic ("(#100) Invalid parameter") while `error_user_title` and
/// `error_user_msg` say what is wrong ("App not installed: ..."): keep both for people.
fn with_user_message(message: String, title: Option<String>, user: Option<String>) -> String {
    let user = user.filter(|u| !u.trim().is_empty() && !message.contains(u.as_str()));
    match (title.filter(|t| !t.trim().is_empty()), user) {
        (Some(t), Some(u)) => format!("{message} ({t}: {u})"),
        (None, Some(u)) => format!("{message} ({u})"),
        (_, None) => message,
    }
}

/// Describes a body that is not Graph JSON.
pub fn bad_body(status: u16, body: &[u8]) -> Transient {
    let trimmed = body.trim_ascii_start();
    let what = if trimmed.is_empty() {
        "an empty body"
    } else if trimmed.starts_with(b"<") {
        "an HTML page"
    } else {
        "a truncated or invalid JSON body"
    };
    Transient::BadBody { status, what }
}

/// Classifies an error response. `retry_after` comes from the response headers, if any.
pub fn classify(
    call: CallKind,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> GraphError {
    let (api, is_transient) = match parse_error_body(status, body) {
        Ok(parsed) => parsed,
        Err(t) => return GraphError::Transient(t),
    };
    classify_api(call, api, is_transient, retry_after)
}

/// Classifies a parsed envelope.
pub fn classify_api(
    call: CallKind,
    api: ApiError,
    is_transient: bool,
    retry_after: Option<Duration>,
) -> GraphError {
    let code = api.code;
    // HTTP 429 is a rate limit whatever the code says (batch items carry their own status).
    if RATE_LIMIT_CODES.contains(&code) || BUC_RATE_LIMITS.contains(&code) || api.status == 429 {
        return GraphError::Transient(Transient::RateLimited { api, retry_after });
    }
    // `Error validating client secret.` is code 1 with type OAuthException and HTTP 400 on
    // oauth calls; a plain code 1 elsewhere, or with a 5xx, is Meta's "unknown error, try
    // again" (which Meta also types OAuthException).
    if call == CallKind::WithAppSecret
        && code == 1
        && api.kind.as_deref() == Some("OAuthException")
        && api.status < 500
    {
        return GraphError::OwnCredentials(api);
    }
    if TEMPORARY_CODES.contains(&code) {
        return GraphError::Transient(Transient::Api(api));
    }
    match (call, code) {
        // The inspector (the app token) was refused: app id/secret pair wrong, secret reset,
        // proof wrong, or the monitored token belongs to another app.
        (CallKind::Inspect, 190 | 0 | 100 | 102 | 10) => GraphError::OwnCredentials(api),
        // "Error validating application. Invalid application ID." on a call that names the
        // app by `client_id`: the app id tokenwarden holds (`[meta]`, or a product app's) is
        // wrong, which only its config can fix.
        (CallKind::WithAppSecret, 101) => GraphError::OwnCredentials(api),
        (_, 190 | 102 | 0) => GraphError::TokenDead(api),
        (_, 3 | 10 | 100 | 200..=299 | 368) => GraphError::Misconfigured(api),
        _ if is_transient => GraphError::Transient(Transient::Api(api)),
        // WhatsApp send errors (131xxx, 132xxx, 133xxx) are about the request or the account.
        _ if (130_000..140_000).contains(&code) => GraphError::Misconfigured(api),
        _ if api.status >= 500 => GraphError::Transient(Transient::Api(api)),
        _ => GraphError::Misconfigured(api),
    }
}

/// Plain words for why Meta considers a token dead (code 190 subcodes, reference section 2).
pub fn dead_reason(api: &ApiError) -> String {
    let words = match (api.code, api.subcode) {
        (0, _) => {
            "WhatsApp refused the token (AuthException): it is expired, revoked or not valid for this app"
        }
        (_, Some(458)) => "the app was removed from the user or system user that owns the token",
        (_, Some(459)) => {
            "the owning account is checkpointed: its owner must log in to Facebook and clear the checkpoint"
        }
        (_, Some(460)) => {
            "the session was invalidated: the owner changed their password or Meta reset it for security"
        }
        (_, Some(463)) => "the token has expired",
        (_, Some(464)) => "the owning user has not confirmed their account",
        (_, Some(466)) => "the token was invalidated by an API call (revoked)",
        (_, Some(467)) => "the token is invalid: its user logged out, or Meta invalidated it",
        (_, Some(492)) => "the owning user lost their role on the asset",
        (_, Some(493)) => "the token's user has not used the app in more than 90 days",
        _ => {
            "Meta says the token is invalid (no reason given: it may have been revoked, malformed or pasted wrongly)"
        }
    };
    match api.subcode {
        Some(s) => format!("{words} (code {}, subcode {s})", api.code),
        None => format!("{words} (code {})", api.code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(code: i64, sub: Option<i64>, kind: &str, extra: &str) -> Vec<u8> {
        let sub = sub
            .map(|s| format!(",\"error_subcode\":{s}"))
            .unwrap_or_default();
        format!(r#"{{"error":{{"message":"m","type":"{kind}","code":{code}{sub}{extra},"fbtrace_id":"A1"}}}}"#).into_bytes()
    }

    fn class(e: &GraphError) -> &'static str {
        match e {
            GraphError::TokenDead(_) => "dead",
            GraphError::Misconfigured(_) => "config",
            GraphError::OwnCredentials(_) => "own",
            GraphError::Transient(_) => "transient",
        }
    }

    /// Every code and subcode of the reference, for each kind of call.
    #[test]
    fn every_reference_code_lands_in_its_class() {
        use CallKind::*;
        type Row = (CallKind, u16, i64, Option<i64>, &'static str, &'static str);
        let rows: &[Row] = &[
            (WithToken, 400, 190, None, "OAuthException", "dead"),
            (WithToken, 401, 190, None, "OAuthException", "dead"),
            (WithToken, 400, 190, Some(458), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(459), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(460), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(463), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(464), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(466), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(467), "OAuthException", "dead"),
            (WithToken, 400, 190, Some(493), "OAuthException", "dead"),
            (WithToken, 401, 0, None, "OAuthException", "dead"),
            (WithToken, 403, 10, None, "OAuthException", "config"),
            (WithToken, 400, 200, None, "OAuthException", "config"),
            (WithToken, 400, 299, None, "OAuthException", "config"),
            (
                WithToken,
                400,
                100,
                Some(33),
                "GraphMethodException",
                "config",
            ),
            (WithToken, 400, 100, None, "OAuthException", "config"),
            (WithToken, 400, 3, None, "OAuthException", "config"),
            (WithToken, 400, 368, None, "OAuthException", "config"),
            (WithToken, 400, 131030, None, "OAuthException", "config"),
            (WithToken, 404, 132001, None, "OAuthException", "config"),
            (WithToken, 500, 1, None, "OAuthException", "transient"),
            (WithToken, 500, 2, None, "OAuthException", "transient"),
            (WithToken, 400, 4, None, "OAuthException", "transient"),
            (WithToken, 400, 17, None, "OAuthException", "transient"),
            (WithToken, 400, 32, None, "OAuthException", "transient"),
            (WithToken, 400, 341, None, "OAuthException", "transient"),
            (WithToken, 400, 613, None, "OAuthException", "transient"),
            (WithToken, 400, 80007, None, "OAuthException", "transient"),
            (WithToken, 400, 80004, None, "OAuthException", "transient"),
            (WithToken, 400, 80008, None, "OAuthException", "transient"),
            (WithToken, 429, 99999, None, "OAuthException", "transient"),
            (Inspect, 429, 100, None, "OAuthException", "transient"),
            (Inspect, 400, 80004, None, "OAuthException", "transient"),
            (WithToken, 429, 130429, None, "OAuthException", "transient"),
            (WithToken, 503, 131016, None, "OAuthException", "transient"),
            (WithToken, 500, 131000, None, "OAuthException", "transient"),
            (WithToken, 500, 99999, None, "OAuthException", "transient"),
            (WithToken, 400, 99999, None, "OAuthException", "config"),
            // Errors about the inspecting call are tokenwarden's own credentials (section 8).
            (Inspect, 400, 190, None, "OAuthException", "own"),
            (Inspect, 400, 100, None, "OAuthException", "own"),
            (Inspect, 400, 100, Some(33), "GraphMethodException", "own"),
            (Inspect, 400, 4, None, "OAuthException", "transient"),
            (Inspect, 500, 2, None, "OAuthException", "transient"),
            (WithAppSecret, 400, 1, None, "OAuthException", "own"),
            (
                WithAppSecret,
                500,
                1,
                None,
                "FacebookApiException",
                "transient",
            ),
            // Meta types its 5xx "unknown error" OAuthException too: not a wrong secret.
            (WithAppSecret, 500, 1, None, "OAuthException", "transient"),
            (WithAppSecret, 400, 190, Some(463), "OAuthException", "dead"),
            (WithAppSecret, 400, 190, None, "OAuthException", "dead"),
            (WithAppSecret, 400, 100, None, "OAuthException", "config"),
            // An unknown `client_id` (Threads' app access token, a refresh or revoke).
            (WithAppSecret, 400, 101, None, "OAuthException", "own"),
            (WithToken, 400, 101, None, "OAuthException", "config"),
        ];
        for (call, status, code, sub, kind, want) in rows {
            let got = classify(*call, *status, &env(*code, *sub, kind, ""), None);
            assert_eq!(
                class(&got),
                *want,
                "{call:?} HTTP {status} code {code}/{sub:?}: {got:?}"
            );
        }
    }

    #[test]
    fn is_transient_flag_is_honoured_but_never_for_a_dead_token() {
        let t = classify(
            CallKind::WithToken,
            400,
            &env(9000, None, "OAuthException", ",\"is_transient\":true"),
            None,
        );
        assert!(matches!(t, GraphError::Transient(_)));
        let d = classify(
            CallKind::WithToken,
            400,
            &env(190, None, "OAuthException", ",\"is_transient\":true"),
            None,
        );
        assert!(matches!(d, GraphError::TokenDead(_)));
    }

    #[test]
    fn proxy_bodies_are_transient_never_panics() {
        for (body, what) in [
            (&b""[..], "an empty body"),
            (b"   \n", "an empty body"),
            (b"<html><body>502 Bad Gateway</body></html>", "an HTML page"),
            (
                br#"{"error":{"message":"Invalid OA"#,
                "a truncated or invalid JSON body",
            ),
            (b"\xff\xfe\x00garbage", "a truncated or invalid JSON body"),
            (br#"{"data":[]}"#, "a truncated or invalid JSON body"),
        ] {
            match classify(CallKind::WithToken, 502, body, None) {
                GraphError::Transient(Transient::BadBody {
                    what: w,
                    status: 502,
                }) => assert_eq!(w, what),
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn codes_may_be_strings_and_escaped_slashes_parse() {
        let body = br#"{"error":{"message":"Unsupported get request. Please read https:\/\/developers.facebook.com\/docs\/graph-api","type":"GraphMethodException","code":"100","error_subcode":"33"}}"#;
        let (api, _) = parse_error_body(400, body).unwrap();
        assert_eq!((api.code, api.subcode), (100, Some(33)));
        assert!(
            api.message
                .contains("https://developers.facebook.com/docs/graph-api")
        );
    }

    #[test]
    fn user_title_and_message_reach_the_error() {
        let body = br#"{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"error_user_title":"App not installed","error_user_msg":"The app 1 is not installed for system user 2."}}"#;
        let (api, _) = parse_error_body(400, body).unwrap();
        assert_eq!(
            api.message,
            "(#100) Invalid parameter (App not installed: The app 1 is not installed for system user 2.)"
        );
        let (plain, _) = parse_error_body(400, &env(100, None, "OAuthException", "")).unwrap();
        assert_eq!(plain.message, "m");
    }

    #[test]
    fn dead_reasons_are_plain_words() {
        let api = |sub| ApiError {
            status: 200,
            code: 190,
            subcode: sub,
            kind: None,
            message: String::new(),
            details: None,
            fbtrace_id: None,
        };
        assert!(dead_reason(&api(Some(463))).contains("expired"));
        assert!(dead_reason(&api(Some(460))).contains("password"));
        assert!(dead_reason(&api(Some(466))).contains("revoked"));
        assert!(dead_reason(&api(None)).contains("no reason given"));
    }
}
