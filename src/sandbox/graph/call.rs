//! A Graph request parsed into a [`Call`]: the path without its version prefix, query and form
//! parameters (`+` and `%XX` decoded), a JSON body, the bearer token of an `Authorization`
//! header, and which [`Endpoint`] it is for. Batch items are parsed with the same code.
//!
//! Nothing here judges a call: authentication is `auth.rs`, the answers are the endpoint files.

use std::collections::HashMap;

use serde_json::Value;

use crate::sandbox::fault::Endpoint;

/// Which of Meta's hosts a call was sent to. The sandbox serves all three on one listener:
/// graph.facebook.com at the root, graph.instagram.com under `/instagram` and
/// graph.threads.net under `/threads` (the client's base URL for each kind says which).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::sandbox) enum Host {
    /// graph.facebook.com.
    #[default]
    Graph,
    /// graph.instagram.com.
    Instagram,
    /// graph.threads.net.
    Threads,
}

/// One Graph call, already parsed: from HTTP or from a batch item.
#[derive(Clone, Debug, Default)]
pub(in crate::sandbox) struct Call {
    /// The host it was sent to (a batch item inherits Graph's).
    pub(super) host: Host,
    pub(super) method: String,
    /// Path segments after the version prefix.
    pub(super) segments: Vec<String>,
    /// Query and form parameters; later sources override earlier ones.
    pub(super) params: HashMap<String, String>,
    /// A JSON request body, when there was one.
    pub(super) json: Option<Value>,
    /// The token of an `Authorization: Bearer` (or `OAuth`) header.
    pub(super) bearer: Option<String>,
}

impl Call {
    /// Builds a call from a path (with or without version), a query string and a body.
    pub(in crate::sandbox) fn parse(
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
        let (host, segments) = split_host(split_path_raw(path));
        Call {
            host,
            method: method.to_ascii_uppercase(),
            segments: strip_version(segments),
            params,
            json,
            bearer,
        }
    }

    /// A query or form parameter.
    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The access token: an `access_token` parameter wins over the header, as in a batch item.
    pub(super) fn token(&self) -> Option<&str> {
        self.param("access_token")
            .or(self.bearer.as_deref())
            .filter(|t| !t.is_empty())
    }

    /// Whether the method is `GET`.
    pub(super) fn is_get(&self) -> bool {
        self.method == "GET"
    }

    /// The endpoint kind, for faults and stats.
    pub(super) fn endpoint(&self) -> Endpoint {
        let s: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        if self.host != Host::Graph {
            return match s.as_slice() {
                ["me"] => Endpoint::Me,
                ["refresh_access_token"] => Endpoint::RefreshAccessToken,
                ["access_token"] => Endpoint::ExchangeToken,
                // Only Threads documents an app access token on its own host.
                ["oauth", "access_token"] if self.host == Host::Threads => {
                    Endpoint::ThreadsAppToken
                }
                _ => Endpoint::Other,
            };
        }
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
#[cfg(test)]
fn split_path(path: &str) -> Vec<String> {
    strip_version(split_path_raw(path))
}

/// Path segments, decoded, without the leading empty one.
fn split_path_raw(path: &str) -> Vec<String> {
    let mut segs: Vec<String> = path.split('/').map(percent_decode).collect();
    // Leading slash: drop the first empty segment only, so `/v21.0//messages` keeps its empty id.
    if segs.first().is_some_and(|s| s.is_empty()) {
        segs.remove(0);
    }
    segs
}

/// The host a path's first segment names (`instagram`, `threads`), and the rest.
fn split_host(mut segs: Vec<String>) -> (Host, Vec<String>) {
    let host = match segs.first().map(String::as_str) {
        Some("instagram") => Host::Instagram,
        Some("threads") => Host::Threads,
        _ => return (Host::Graph, segs),
    };
    segs.remove(0);
    (host, segs)
}

/// Segments without an optional `vNN.N` first one and a trailing empty one.
fn strip_version(mut segs: Vec<String>) -> Vec<String> {
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
fn parse_urlencoded(s: &str) -> Vec<(String, String)> {
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
}
