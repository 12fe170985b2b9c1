//! Batches: `POST /` with a `batch` JSON array of at most 50 items, each answered as its own
//! call (faults and counts per item) and written out as `{code, headers, body}`;
//! `include_headers=false` drops the items' headers. An item takes the top-level
//! `access_token` and proof, never the batch request's `Authorization` header.
//!
//! Latency and the fault of the batch request as a whole are applied by the router
//! (`mod.rs`) before it gets here; what each item answers is its endpoint's file.

use serde_json::{Value, json};

use super::call::Call;
use super::envelope::{GraphError, JSON_TYPE, Reply};
use super::{dispatch, handle_one};
use crate::sandbox::fault::Endpoint;
use crate::sandbox::world::{Shared, lock};

/// Most items a batch may hold.
const MAX_BATCH: usize = 50;

/// Answers `POST /` with `batch`: every item in order, each with its own faults and counts.
pub(super) async fn batch(shared: &Shared, call: &Call) -> Reply {
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
            return GraphError::batch(
                100,
                format!("Too many requests in batch message. Maximum batch size is {MAX_BATCH}"),
            )
            .into_reply(&mut w);
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
    fn header_names_are_title_cased() {
        assert_eq!(header_title("www-authenticate"), "WWW-Authenticate");
        assert_eq!(header_title("x-app-usage"), "X-App-Usage");
    }
}
