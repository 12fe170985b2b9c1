//! What happens to a request before and around its endpoint: the in-flight count
//! ([`InFlight`]), the scenario's latency (once per HTTP request), and the injected
//! [`Fault`]s: [`pre`] counts the call and takes the next matching fault, which either replaces
//! the answer (server error, HTML, empty body, rate limit, AuthException), delays it, halves
//! it ([`truncate`]) or quotes the request back ([`echo`]).
//!
//! The quirks are not here: each lives in the file of the endpoint it changes. The `Fault`
//! type itself (and its TOML/JSON form) is in `sandbox/fault.rs`.

use std::time::Duration;

use serde_json::json;

use super::call::Call;
use super::envelope::{GraphError, JSON_TYPE, Reply, business_use_case_usage};
use crate::sandbox::fault::{Endpoint, Fault};
use crate::sandbox::world::{Shared, World, lock};

/// What a pending fault does to a call.
pub(super) enum Pre {
    /// No fault (or a delay already slept): answer normally.
    Normal,
    /// Answer normally, then cut the body in half ([`Fault::Truncated`]).
    Truncate,
    /// The fault's answer replaces the real one.
    Answer(Reply),
    /// An error that quotes the request ([`Fault::Echo`]): built from the call.
    Echo(u32),
}

/// Counts the call and applies the next matching fault (sleeping for delays).
pub(super) async fn pre(shared: &Shared, endpoint: Endpoint) -> Pre {
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
            retry_after_header,
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
            let usage = business_use_case_usage(w, retry_after_secs.div_ceil(60), 28, 36);
            let mut r = e.into_reply(w);
            r.headers.push(("x-business-use-case-usage", usage));
            if retry_after_header {
                r.headers
                    .push(("retry-after", retry_after_secs.to_string()));
            }
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
pub(super) fn echo(w: &mut World, call: &Call, code: u32) -> Reply {
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

pub(super) fn truncate(mut r: Reply) -> Reply {
    let half = r.body.len() / 2;
    r.body.truncate(half);
    r.status = 200;
    r
}

/// Counts a request in flight until dropped (also when the client goes away mid-request).
pub(super) struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    /// Counts the arrival (and records how many were in flight).
    pub(super) fn enter(shared: &'a Shared) -> InFlight<'a> {
        lock(shared).arrive();
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(self.0).depart();
    }
}

/// Sleeps the scenario's `latency_ms`: once per HTTP request, so a batch of 50 costs one
/// round trip.
pub(super) async fn latency(shared: &Shared) {
    let latency = lock(shared).scenario.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
}
