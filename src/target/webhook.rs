//! The `webhook` target: an HTTPS POST of the new token, signed so the receiver can tell it came
//! from tokenwarden and was not replayed.
//!
//! The body is JSON:
//! `{"token_name", "token", "fingerprint", "expires_at" (RFC 3339 or null), "sent_at", "event"}`,
//! where `event` is `"rotation"`, `"rollback"`, `"drift"` or `"sync"` ([`super::PushEvent`]). The signature header (by default
//! `X-Tokenwarden-Signature`) follows Stripe's well-known scheme, so receivers can reuse its
//! examples: `t=<unix seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<t>." + body)>`. The
//! receiver checks it before it trusts anything in the body (this is [`verify`]):
//!
//! ```text
//! t, v1 = parse(header)                      # "t=1700000000,v1=5f0c..."
//! if |now - t| > 300: reject                 # old (replayed) or from a skewed clock
//! if !constant_time_eq(v1, hex(hmac_sha256(secret, t + "." + raw_body))): reject
//! ```
//!
//! It must hash the raw body bytes as received, not a re-serialized copy. Several `v1=` entries
//! are accepted (one must match), leaving room to sign with two secrets while one is replaced.
//!
//! A 2xx answer is success. Connection failures, timeouts, 408, 429 and 5xx are transient and
//! retried with exponential backoff and jitter (a `Retry-After` in seconds is honoured up to
//! 60 s); each attempt is signed again with a fresh timestamp, so a slow retry still passes the
//! receiver's window. Any other answer is refused at once: a 4xx will not change by asking
//! again, and a 3xx is not followed, because following it would send the token somewhere the
//! config does not name. Delivery is at least once: a timeout after the receiver acted sends the
//! token again, so receivers treat a repeated `fingerprint` and `event` as done.
//!
//! Errors name the receiver by host only and never carry the body: the URL's path or query may
//! hold a secret of its own (reqwest errors are stripped of their URL), and the body holds the
//! token.

use std::fmt;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, RETRY_AFTER};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::TargetError;
use super::exec::human;
use crate::secret::{Secret, hex};

/// The signature header unless the config names another.
pub const DEFAULT_HEADER: &str = "X-Tokenwarden-Signature";

/// The replay window receivers should allow (Stripe's default): wide enough for clock skew and
/// a slow network, narrow enough that a captured request soon stops working.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Longest `Retry-After` a receiver may impose inside one push; beyond it the push gives up as
/// transient and the rollout tries again later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One token delivery: what the body says.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The token's name in the config.
    pub token_name: &'a str,
    /// The token being delivered.
    pub token: &'a Secret,
    /// When the token expires; `None` for a token that does not (sent as `null`).
    pub expires_at: Option<Timestamp>,
    /// Why it is sent.
    pub event: super::PushEvent,
}

/// The JSON body. Field order is the documented order; the token is borrowed, never copied
/// into anything that outlives the push except the zeroed buffer.
#[derive(serde::Serialize)]
struct Body<'a> {
    token_name: &'a str,
    token: &'a str,
    fingerprint: String,
    expires_at: Option<Timestamp>,
    sent_at: Timestamp,
    event: super::PushEvent,
}

/// A webhook receiver and how to reach it.
#[derive(Clone)]
pub struct Webhook {
    url: reqwest::Url,
    secret: Secret,
    header: HeaderName,
    timeout: Duration,
    attempts: u32,
    retry_delay: Duration,
    http: reqwest::Client,
}

impl fmt::Debug for Webhook {
    /// By host only: the URL's path or query may hold a secret, and the signing secret never
    /// shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("host", &place(&self.url))
            .field("secret", &self.secret)
            .field("header", &self.header)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl Webhook {
    /// A webhook posting to `url`, signing with `secret`; 3 attempts, 10 s each, 1 s first
    /// backoff, the [`DEFAULT_HEADER`].
    ///
    /// # Errors
    /// [`TargetError::Refused`] when `url` is not https (plain http only to loopback, as for
    /// `meta.base_url`: a token must not cross a network in clear text), when `secret` is empty
    /// (anyone could sign), or when the HTTP client cannot be built.
    pub fn new(url: reqwest::Url, secret: Secret) -> Result<Webhook, TargetError> {
        match url.scheme() {
            "https" => {}
            "http" if crate::config::is_loopback(&url) => {}
            _ => {
                return Err(TargetError::Refused(format!(
                    "webhook {}: expected an https URL (plain http only to loopback)",
                    place(&url)
                )));
            }
        }
        if secret.is_empty() {
            return Err(TargetError::Refused(format!(
                "webhook {}: the signing secret is empty",
                place(&url)
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A redirect would carry the token to a place the config does not name.
            .redirect(reqwest::redirect::Policy::none())
            // Nor may a proxy from the environment (`https_proxy`) see it: the receiver is
            // reached directly, as configured.
            .no_proxy()
            .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                TargetError::Refused(format!("webhook client: {}", error_chain(e.without_url())))
            })?;
        Ok(Webhook {
            url,
            secret,
            header: HeaderName::from_static("x-tokenwarden-signature"),
            timeout: Duration::from_secs(10),
            attempts: 3,
            retry_delay: Duration::from_secs(1),
            http,
        })
    }

    /// Signs in the header `name` instead of [`DEFAULT_HEADER`].
    ///
    /// # Errors
    /// [`TargetError::Refused`] when `name` is not a valid header name.
    pub fn with_header(mut self, name: &str) -> Result<Webhook, TargetError> {
        self.header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            TargetError::Refused(format!(
                "webhook {}: {name:?} is not a valid header name",
                place(&self.url)
            ))
        })?;
        Ok(self)
    }

    /// How long one attempt may take, connection included.
    pub fn with_timeout(mut self, timeout: Duration) -> Webhook {
        self.timeout = timeout;
        self
    }

    /// Total attempts (at least 1) and the first backoff delay, which doubles each attempt
    /// (capped at 30 s) with jitter.
    pub fn with_retries(mut self, attempts: u32, retry_delay: Duration) -> Webhook {
        self.attempts = attempts.max(1);
        self.retry_delay = retry_delay;
        self
    }

    /// Posts `d`, signed, retrying transient failures. `now` is `sent_at` and the first
    /// attempt's signature time; later attempts add the time spent since.
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a 3xx or a 4xx other than 408 and 429 (names the status);
    /// [`TargetError::Transient`] when the last attempt failed to connect, timed out or got a
    /// 408, 429 or 5xx, or a `Retry-After` asked for more than 60 s.
    pub async fn push(&self, d: &Delivery<'_>, now: Timestamp) -> Result<(), TargetError> {
        let body = body(d, now)?;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let t = now
                .as_second()
                .saturating_add(started.elapsed().as_secs() as i64);
            let (why, retry_after) = match self.attempt(&body, t).await {
                Ok(()) => return Ok(()),
                Err(Failure::Refused(why)) => {
                    return Err(TargetError::Refused(format!(
                        "webhook {}: {why}",
                        place(&self.url)
                    )));
                }
                Err(Failure::Transient { why, retry_after }) => (why, retry_after),
            };
            if attempt >= self.attempts {
                return Err(TargetError::Transient(format!(
                    "webhook {}: {why} ({attempt} attempt{})",
                    place(&self.url),
                    if attempt == 1 { "" } else { "s" }
                )));
            }
            let mut delay = crate::graph::backoff(self.retry_delay, attempt);
            if let Some(wait) = retry_after {
                if wait > MAX_RETRY_AFTER {
                    return Err(TargetError::Transient(format!(
                        "webhook {}: {why}; it asked to wait {}, longer than {}",
                        place(&self.url),
                        human(wait),
                        human(MAX_RETRY_AFTER)
                    )));
                }
                delay = delay.max(wait);
            }
            tracing::debug!(
                host = %place(&self.url),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %why,
                "webhook failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: &[u8], t: i64) -> Result<(), Failure> {
        let resp = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header(self.header.clone(), sign(&self.secret, t, body))
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Failure::Transient {
                why: transport_error(e, self.timeout),
                retry_after: None,
            })?;
        // The body is never read (the status says everything), so a huge or endless answer
        // costs nothing: dropping the response closes the connection.
        classify(resp.status(), resp.headers()).map_err(|f| match f {
            Failure::Refused(why) if resp.status().is_redirection() => Failure::Refused(format!(
                "{why} (it pointed to {})",
                crate::graph::location_host(resp.url(), resp.headers())
            )),
            other => other,
        })
    }
}

/// How one attempt failed.
enum Failure {
    Refused(String),
    Transient {
        why: String,
        retry_after: Option<Duration>,
    },
}

/// What an answer means: 2xx done; 408, 429, 5xx worth another try; anything else final.
fn classify(status: StatusCode, headers: &HeaderMap) -> Result<(), Failure> {
    let code = status.as_u16();
    if status.is_success() {
        Ok(())
    } else if code == 408 || code == 429 || status.is_server_error() {
        Err(Failure::Transient {
            why: format!("answered {status}"),
            retry_after: retry_after(headers),
        })
    } else if status.is_redirection() {
        Err(Failure::Refused(format!(
            "answered {status}; redirects are not followed, configure the final URL"
        )))
    } else {
        Err(Failure::Refused(format!("answered {status}")))
    }
}

/// `Retry-After` in seconds. The HTTP-date form is ignored (the backoff applies): receivers
/// that rate-limit hooks send seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The serialized body in a buffer that is zeroed when dropped (it holds the token).
fn body(d: &Delivery<'_>, now: Timestamp) -> Result<Zeroizing<Vec<u8>>, TargetError> {
    let body = Body {
        token_name: d.token_name,
        token: d.token.expose(),
        fingerprint: d.token.fingerprint().to_string(),
        expires_at: d.expires_at,
        // Whole seconds, like the signature's `t`.
        sent_at: Timestamp::from_second(now.as_second()).unwrap_or(now),
        event: d.event,
    };
    // Sized up front so that serializing never reallocates and leaves a copy behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(
        256 + 2 * (d.token.expose().len() + d.token_name.len() + d.event.word().len()),
    ));
    serde_json::to_writer(&mut *buf, &body)
        .map_err(|_| TargetError::Refused("the webhook body could not be serialized".into()))?;
    Ok(buf)
}

/// The signature header's value for a body sent at `t` (unix seconds):
/// `t=<t>,v1=<lowercase hex HMAC-SHA256(secret, "<t>." + body)>`.
pub fn sign(secret: &Secret, t: i64, body: &[u8]) -> String {
    let t = t.to_string();
    format!(
        "t={t},v1={}",
        hex(&mac(secret, &t, body).finalize().into_bytes())
    )
}

/// A receiver's check of a signature header: the timestamp must be within `tolerance_secs` of
/// `now` (either side, for skewed clocks) and one `v1` must be the HMAC of `"<t>." + body`,
/// compared in constant time. Unknown `key=value` entries are ignored, as in Stripe's scheme.
///
/// # Errors
/// A fixed description of what is wrong; never any part of the header, body or secret.
pub fn verify(
    header: &str,
    body: &[u8],
    secret: &Secret,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), &'static str> {
    let mut t_text = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or("malformed signature header")?;
        match key {
            "t" if t_text.replace(value).is_some() => return Err("more than one timestamp"),
            "t" => {}
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let t_text = t_text.ok_or("no timestamp")?;
    let t: i64 = t_text.parse().map_err(|_| "malformed timestamp")?;
    if signatures.is_empty() {
        return Err("no v1 signature");
    }
    if now.abs_diff(t) > tolerance_secs.max(0).unsigned_abs() {
        return Err("timestamp outside the tolerance window (a replay, or a skewed clock)");
    }
    // The MAC covers the timestamp as sent, so it is hashed as text, not re-formatted.
    let matched = signatures
        .iter()
        .filter_map(|s| unhex(s))
        .any(|tag| mac(secret, t_text, body).verify_slice(&tag).is_ok());
    if matched {
        Ok(())
    } else {
        Err("signature mismatch")
    }
}

fn mac(secret: &Secret, t: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The receiver as errors and logs name it: host and port, never the path or query.
pub(super) fn place(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => "(no host)".to_string(),
    }
}

/// A reqwest failure in words, stripped of its URL.
fn transport_error(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {}", human(timeout))
    } else if e.is_connect() {
        format!("could not connect: {}", error_chain(e.without_url()))
    } else {
        error_chain(e.without_url())
    }
}

pub(super) use crate::graph::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3: hmac.new(b"whsec_test_secret", b'1700000000.{"token_name":"prod"}',
        //                   hashlib.sha256).hexdigest()
        let s = Secret::new("whsec_test_secret");
        assert_eq!(
            sign(&s, T, br#"{"token_name":"prod"}"#),
            "t=1700000000,v1=8d808666f917fd9e2cdc19add7461ce809029f12ecf29c7826ed06c1a5215b91"
        );
        assert_eq!(
            sign(&Secret::new("Jefe"), 1, b"x"),
            "t=1,v1=2f7ccbd0f043456ad29514b2d24a8aa345ec6673a5db1b44e91c8ac99d1841e3"
        );
    }

    #[test]
    fn verify_accepts_within_the_window_and_rejects_outside() {
        let s = Secret::new("whsec_test_secret");
        let body = br#"{"token_name":"prod"}"#;
        let h = sign(&s, T, body);
        // Edges: exactly the tolerance either side passes, one second more does not.
        for (now, ok) in [
            (T, true),
            (T + 300, true),
            (T - 300, true),
            (T + 301, false),
            (T - 301, false),
        ] {
            let got = verify(&h, body, &s, now, 300);
            assert_eq!(got.is_ok(), ok, "now = T{:+}: {got:?}", now - T);
        }
        assert_eq!(
            verify(&h, body, &s, T + 301, 300),
            Err("timestamp outside the tolerance window (a replay, or a skewed clock)")
        );
        // A negative tolerance means none.
        assert!(verify(&h, body, &s, T, -5).is_ok());
        assert!(verify(&h, body, &s, T + 1, -5).is_err());
        // Extreme clocks do not overflow.
        assert!(verify(&h, body, &s, i64::MIN, 300).is_err());
        assert!(verify(&h, body, &s, i64::MAX, i64::MAX).is_ok());
    }

    #[test]
    fn verify_rejects_wrong_inputs() {
        let s = Secret::new("whsec_test_secret");
        let body = br#"{"token_name":"prod"}"#;
        let h = sign(&s, T, body);
        let v1 = h.split_once(",v1=").unwrap().1;
        let cases: [(&str, &[u8], &str, &str); 9] = [
            (
                &h,
                br#"{"token_name":"prof"}"#,
                "whsec_test_secret",
                "signature mismatch",
            ),
            (&h, body, "another secret", "signature mismatch"),
            (
                &format!("t={},v1={v1}", T + 1),
                body,
                "whsec_test_secret",
                "signature mismatch",
            ),
            (
                &format!("v1={v1}"),
                body,
                "whsec_test_secret",
                "no timestamp",
            ),
            (
                &format!("t={T}"),
                body,
                "whsec_test_secret",
                "no v1 signature",
            ),
            (
                &format!("t=soon,v1={v1}"),
                body,
                "whsec_test_secret",
                "malformed timestamp",
            ),
            (
                &format!("t={T},t={T},v1={v1}"),
                body,
                "whsec_test_secret",
                "more than one timestamp",
            ),
            (
                &format!("t={T},v1={}", &v1[..62]),
                body,
                "whsec_test_secret",
                "signature mismatch",
            ),
            (
                "garbage",
                body,
                "whsec_test_secret",
                "malformed signature header",
            ),
        ];
        for (header, body, secret, want) in cases {
            assert_eq!(
                verify(header, body, &Secret::new(secret), T, 300),
                Err(want),
                "{header}"
            );
        }
    }

    #[test]
    fn verify_accepts_any_matching_v1_and_ignores_unknown_schemes() {
        let s = Secret::new("whsec_new");
        let body = b"{}";
        let good = sign(&s, T, body);
        let v1 = good.split_once(",v1=").unwrap().1;
        let old = sign(&Secret::new("whsec_old"), T, body);
        let old_v1 = old.split_once(",v1=").unwrap().1;
        let header = format!("t={T}, v1={old_v1}, v0=zz, v1={v1}");
        assert_eq!(verify(&header, body, &s, T, 300), Ok(()));
        assert_eq!(
            verify(&format!("t={T},v1=nothex"), body, &s, T, 300),
            Err("signature mismatch")
        );
    }

    #[test]
    fn answers_are_classified() {
        let none = HeaderMap::new();
        let mut wait = HeaderMap::new();
        wait.insert(RETRY_AFTER, "7".parse().unwrap());
        assert!(classify(StatusCode::OK, &none).is_ok());
        assert!(classify(StatusCode::NO_CONTENT, &none).is_ok());
        for code in [408, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, &none), Err(Failure::Transient { .. })),
                "{code}"
            );
        }
        match classify(StatusCode::TOO_MANY_REQUESTS, &wait) {
            Err(Failure::Transient { retry_after, why }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(why, "answered 429 Too Many Requests");
            }
            _ => panic!("429 is transient"),
        }
        for code in [301, 307, 400, 401, 403, 404, 410, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            match classify(s, &none) {
                Err(Failure::Refused(why)) => assert!(why.contains(&code.to_string()), "{why}"),
                _ => panic!("{code} is refused"),
            }
        }
    }

    #[test]
    fn only_https_or_loopback_http_and_a_secret_are_accepted() {
        let s = || Secret::new("whsec");
        for ok in [
            "https://hooks.example.com/x",
            "http://127.0.0.1:9/x",
            "http://localhost/x",
            "http://[::1]:8080/",
        ] {
            assert!(Webhook::new(ok.parse().unwrap(), s()).is_ok(), "{ok}");
        }
        for bad in ["http://hooks.example.com/x", "ftp://127.0.0.1/x"] {
            let e = Webhook::new(bad.parse().unwrap(), s()).unwrap_err();
            assert!(matches!(e, TargetError::Refused(_)), "{bad}: {e}");
        }
        let e = Webhook::new("https://h.example/x".parse().unwrap(), Secret::new("")).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let w = Webhook::new("https://h.example/x".parse().unwrap(), s()).unwrap();
        assert!(w.with_header("bad header").is_err());
    }

    #[test]
    fn debug_and_errors_name_the_host_only() {
        let url: reqwest::Url = "https://h.example:8443/hook/path-secret?key=query-secret"
            .parse()
            .unwrap();
        let w = Webhook::new(url.clone(), Secret::new("whsec_canary")).unwrap();
        let shown = format!("{w:?}");
        for leak in ["path-secret", "query-secret", "whsec_canary"] {
            assert!(!shown.contains(leak), "{shown}");
        }
        assert!(shown.contains("h.example:8443"), "{shown}");
        let http: reqwest::Url = "http://h.example/path-secret?key=query-secret"
            .parse()
            .unwrap();
        let e = Webhook::new(http, Secret::new("whsec_canary")).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn body_has_the_documented_fields() {
        let token = Secret::new("EAAGtoken");
        let now = Timestamp::from_second(T).unwrap() + jiff::SignedDuration::from_millis(250);
        let d = Delivery {
            token_name: "prod",
            token: &token,
            expires_at: Some(Timestamp::from_second(T + 86_400).unwrap()),
            event: crate::target::PushEvent::Rotation,
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&d, now).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "token_name": "prod",
                "token": "EAAGtoken",
                "fingerprint": token.fingerprint().to_string(),
                "expires_at": "2023-11-15T22:13:20Z",
                "sent_at": "2023-11-14T22:13:20Z",
                "event": "rotation",
            })
        );
        let never = Delivery {
            expires_at: None,
            ..d
        };
        let v: serde_json::Value = serde_json::from_slice(&body(&never, now).unwrap()).unwrap();
        assert_eq!(v["expires_at"], serde_json::Value::Null);
    }
}
