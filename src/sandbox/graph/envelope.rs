//! The shape of every Graph answer: [`Reply`] (status, type, headers, body), the error envelope
//! [`GraphError`] with its builders, the refusals several endpoint families share (unsupported
//! method or object, missing parameter, permissions), and [`finish`], the headers every answer
//! carries (`X-App-Usage`, trace ids, API version).
//!
//! Which error an endpoint gives, and when, is not here: that is in the endpoint's file
//! (`auth.rs` for the token refusals). Fault answers are built in `faults.rs`.

use serde_json::{Value, json};

use crate::sandbox::world::{Shared, World, lock};

pub(super) const JSON_TYPE: &str = "application/json; charset=UTF-8";
const GRAPH_DOCS: &str = "https://developers.facebook.com/docs/graph-api";

/// An answer before it becomes an HTTP response (or a batch item).
#[derive(Clone, Debug)]
pub(in crate::sandbox) struct Reply {
    /// HTTP status.
    pub(in crate::sandbox) status: u16,
    /// `Content-Type`.
    pub(in crate::sandbox) content_type: &'static str,
    /// Extra headers, lower case (batch items title-case them).
    pub(in crate::sandbox) headers: Vec<(&'static str, String)>,
    /// The body, as sent.
    pub(in crate::sandbox) body: Vec<u8>,
}

impl Reply {
    /// A JSON answer.
    pub(super) fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: JSON_TYPE,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    /// A body sent as is (Meta's odd documented answers, a proxy's page).
    pub(super) fn raw(status: u16, content_type: &'static str, body: &str) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// A Graph error envelope under construction (boxed: errors travel in every `Result` here).
#[derive(Clone, Debug)]
pub(super) struct GraphError(Box<ErrorSpec>);

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
    /// An `OAuthException` with HTTP 400.
    pub(super) fn new(code: u32, message: impl Into<String>) -> GraphError {
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
    /// A `GraphMethodException` (unsupported request, proof refused).
    pub(super) fn method(code: u32, message: impl Into<String>) -> GraphError {
        let mut e = GraphError::new(code, message);
        e.0.etype = "GraphMethodException";
        e
    }
    /// A `GraphBatchException`: the batch as a whole is refused.
    pub(super) fn batch(code: u32, message: impl Into<String>) -> GraphError {
        let mut e = GraphError::new(code, message);
        e.0.etype = "GraphBatchException";
        e
    }
    /// Sets `error_subcode`.
    pub(super) fn sub(mut self, s: u32) -> Self {
        self.0.subcode = Some(s);
        self
    }
    /// Sets the HTTP status.
    pub(super) fn status(mut self, s: u16) -> Self {
        self.0.status = s;
        self
    }
    /// Drops `fbtrace_id`.
    pub(super) fn bare(mut self) -> Self {
        self.0.bare = true;
        self
    }
    /// Sets `is_transient: true`.
    pub(super) fn transient(mut self) -> Self {
        self.0.transient = true;
        self
    }
    /// Sets `error_data.details` (WhatsApp's form).
    pub(super) fn details(mut self, d: impl Into<String>) -> Self {
        self.0.details = Some(d.into());
        self
    }
    /// Sets `error_user_title` and `error_user_msg`.
    pub(super) fn user(mut self, title: &str, msg: String) -> Self {
        self.0.user = Some((title.into(), msg));
        self
    }
    /// Adds a response header.
    pub(super) fn header(mut self, name: &'static str, value: String) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The answer: slashes escaped as Meta does, `WWW-Authenticate` for codes 190, 0 and 100.
    pub(super) fn into_reply(self, w: &mut World) -> Reply {
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

/// Code 200: the caller may not touch this object.
pub(super) fn permissions_error() -> GraphError {
    GraphError::new(200, "(#200) Permissions error")
}

/// Code 100/33: no such object, or it does not take this method.
pub(super) fn unsupported(method: &str, id: &str) -> GraphError {
    GraphError::method(
        100,
        format!(
            "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at {GRAPH_DOCS}"
        ),
    )
    .sub(33)
}

/// Code 100: a required parameter is missing.
pub(super) fn missing_param(name: &str) -> GraphError {
    GraphError::new(100, format!("(#100) The parameter {name} is required"))
}

/// `X-Business-Use-Case-Usage` at 100 % for the world's first WABA (`0` without one), with
/// `estimated_time_to_regain_access` in `minutes`: a rate-limit fault and the business
/// throttle both send it, each with its own CPU and time figures.
pub(super) fn business_use_case_usage(w: &World, minutes: u64, cputime: u32, time: u32) -> String {
    let waba = w
        .scenario
        .wabas
        .first()
        .map(|x| x.id.clone())
        .unwrap_or_else(|| "0".into());
    json!({ waba: [{
        "type": "whatsapp_business_management",
        "call_count": 100,
        "total_cputime": cputime,
        "total_time": time,
        "estimated_time_to_regain_access": minutes,
    }]})
    .to_string()
}

/// Adds the headers every Graph answer carries.
pub(super) fn finish(shared: &Shared, mut r: Reply) -> Reply {
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
