//! Failures to inject: [`Fault`] (a 5xx, an HTML page, an empty or truncated body, a delay, a
//! rate limit, an AuthException, an echo of the request), with its TOML/JSON form, and the
//! [`Endpoint`] kinds a fault matches on and the stats count by.
//!
//! Only the definitions are here: pending faults are kept in `world.rs` and applied to a
//! request in `graph/faults.rs`.

use serde::{Deserialize, Serialize};

/// Which Graph endpoint a request is for: faults match on it and stats count by it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// Matches every endpoint (faults only).
    #[default]
    Any,
    /// `GET /debug_token`.
    DebugToken,
    /// `GET /{phone-number-id}` (and other object reads).
    Phone,
    /// `GET /{waba-id}/phone_numbers`.
    PhoneNumbers,
    /// `POST /{phone-number-id}/messages`.
    Messages,
    /// `GET /oauth/access_token`.
    Refresh,
    /// `POST /{system-user-id}/access_tokens`.
    Mint,
    /// `/oauth/revoke`.
    Revoke,
    /// `POST /` with `batch`.
    Batch,
    /// `GET /me` on the Instagram or Threads host (the kinds' proof read).
    Me,
    /// `GET /refresh_access_token` on the Instagram or Threads host.
    RefreshAccessToken,
    /// `GET /access_token` (short-lived to long-lived exchange) on the Instagram or Threads host.
    ExchangeToken,
    /// `GET /oauth/access_token` with `client_credentials` on the Threads host: the Threads
    /// app's own app access token (Graph's `/oauth/access_token` is [`Endpoint::Refresh`]).
    ThreadsAppToken,
    /// Anything else.
    Other,
}

/// A failure to inject into the next `count` requests for `endpoint` (0 = until cleared).
///
/// As JSON or TOML: `{"kind":"rate_limit","endpoint":"messages","code":130429,"count":2}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// HTTP `status` (5xx) with a Meta code 1 or 2 envelope.
    ServerError {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
        /// HTTP status.
        #[serde(default = "status_500")]
        status: u16,
        /// Meta error code (1 unknown error, 2 service error).
        #[serde(default = "code_2")]
        code: u32,
    },
    /// A proxy's HTML page: `502 Bad Gateway`, `text/html`.
    Html {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
    },
    /// An empty body with HTTP `status` (default 200).
    Empty {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
        /// HTTP status.
        #[serde(default = "status_200")]
        status: u16,
    },
    /// HTTP 200 with the first half of the real answer's body.
    Truncated {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
    },
    /// Waits `ms` milliseconds, then answers normally.
    Delay {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
        /// The wait.
        ms: u64,
    },
    /// A rate limit (codes 4, 17, 32, 613, 80007, 130429, ...) as HTTP 400 with usage headers.
    RateLimit {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
        /// Meta error code.
        #[serde(default = "code_4")]
        code: u32,
        /// The wait: `estimated_time_to_regain_access` in `X-Business-Use-Case-Usage`, in
        /// minutes (rounded up), as Meta sends it.
        #[serde(default = "sixty")]
        retry_after_secs: u64,
        /// Also send it as `Retry-After`, in seconds. Off by default: Meta documents no
        /// `Retry-After` ("Rate limiting"), and a client that relied on it would pass here and
        /// fail against Meta. A proxy or gateway in front of Graph may add one.
        #[serde(default)]
        retry_after_header: bool,
    },
    /// WhatsApp's code 0 `AuthException`, HTTP 401.
    AuthException {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
    },
    /// An error envelope with Meta `code` whose message, user message and details quote the
    /// request back: every parameter (tokens, secrets, proofs), the `Authorization` header, and
    /// the bearer token URL-encoded and in base64. Meta does not do this; a proxy, a gateway or
    /// a future Meta message might, and nothing of it may reach an output.
    Echo {
        /// Matched endpoint.
        #[serde(default)]
        endpoint: Endpoint,
        /// Requests affected; 0 = until cleared.
        #[serde(default = "one")]
        count: u32,
        /// Meta error code (100: a refusal that ends in a verdict; 2: transient).
        #[serde(default = "code_100")]
        code: u32,
    },
}

impl Fault {
    /// The endpoint this fault matches.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Fault::ServerError { endpoint, .. }
            | Fault::Html { endpoint, .. }
            | Fault::Empty { endpoint, .. }
            | Fault::Truncated { endpoint, .. }
            | Fault::Delay { endpoint, .. }
            | Fault::RateLimit { endpoint, .. }
            | Fault::AuthException { endpoint, .. }
            | Fault::Echo { endpoint, .. } => *endpoint,
        }
    }

    /// How many more requests it affects (0 = until cleared).
    pub fn count(&self) -> u32 {
        match self {
            Fault::ServerError { count, .. }
            | Fault::Html { count, .. }
            | Fault::Empty { count, .. }
            | Fault::Truncated { count, .. }
            | Fault::Delay { count, .. }
            | Fault::RateLimit { count, .. }
            | Fault::AuthException { count, .. }
            | Fault::Echo { count, .. } => *count,
        }
    }

    /// Sets how many requests it affects (0 = until cleared).
    pub fn times(mut self, n: u32) -> Fault {
        match &mut self {
            Fault::ServerError { count, .. }
            | Fault::Html { count, .. }
            | Fault::Empty { count, .. }
            | Fault::Truncated { count, .. }
            | Fault::Delay { count, .. }
            | Fault::RateLimit { count, .. }
            | Fault::AuthException { count, .. }
            | Fault::Echo { count, .. } => *count = n,
        }
        self
    }

    /// A 5xx with a Meta code 1 or 2 envelope, once.
    pub fn server_error(endpoint: Endpoint, status: u16, code: u32) -> Fault {
        Fault::ServerError {
            endpoint,
            count: 1,
            status,
            code,
        }
    }

    /// A 502 HTML page, once.
    pub fn html(endpoint: Endpoint) -> Fault {
        Fault::Html { endpoint, count: 1 }
    }

    /// An empty HTTP 200 body, once.
    pub fn empty(endpoint: Endpoint) -> Fault {
        Fault::Empty {
            endpoint,
            count: 1,
            status: 200,
        }
    }

    /// Half of the real body with HTTP 200, once.
    pub fn truncated(endpoint: Endpoint) -> Fault {
        Fault::Truncated { endpoint, count: 1 }
    }

    /// A delay before the normal answer, once.
    pub fn delay(endpoint: Endpoint, ms: u64) -> Fault {
        Fault::Delay {
            endpoint,
            count: 1,
            ms,
        }
    }

    /// A rate-limit error with `code`, once, asking to retry after 60 seconds.
    pub fn rate_limit(endpoint: Endpoint, code: u32) -> Fault {
        Fault::RateLimit {
            endpoint,
            count: 1,
            code,
            retry_after_secs: 60,
            retry_after_header: false,
        }
    }

    /// WhatsApp's code 0 AuthException (HTTP 401), once.
    pub fn auth_exception(endpoint: Endpoint) -> Fault {
        Fault::AuthException { endpoint, count: 1 }
    }
}

fn one() -> u32 {
    1
}
fn status_500() -> u16 {
    500
}
fn status_200() -> u16 {
    200
}
fn code_2() -> u32 {
    2
}
fn code_4() -> u32 {
    4
}
fn code_100() -> u32 {
    100
}
fn sixty() -> u64 {
    60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_deserialize_with_defaults() {
        let f: Fault = serde_json::from_str(r#"{"kind":"server_error"}"#).unwrap();
        assert_eq!(f, Fault::server_error(Endpoint::Any, 500, 2));
        let f: Fault =
            serde_json::from_str(r#"{"kind":"delay","ms":250,"endpoint":"debug_token"}"#).unwrap();
        assert_eq!(f, Fault::delay(Endpoint::DebugToken, 250));
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"delay"}"#).is_err());
    }
}
