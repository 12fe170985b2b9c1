//! The HTTP side the platform targets share (`github_actions_secret`, `heroku_config_var`,
//! `vercel_env`, `render_env_var`): one client per target that carries the platform's API
//! credential, and one way of calling it.
//!
//! The client follows no redirect and takes no proxy from the environment (it carries a
//! credential and, in a body, the token); its base URL is `https://`, or `http://` only to
//! loopback (tests, a local proxy of the platform). Path segments (an app, a project, a secret
//! name) are percent-encoded one by one, so a name cannot reach another path; no token ever goes
//! in a URL. A body that holds the token is serialized into a buffer zeroed when dropped.
//!
//! Answers: 408, 409 (another writer got there first: GitHub and Render answer it to concurrent
//! writes), 429 and 5xx, a timeout or a connection failure are retried with exponential backoff
//! and jitter, honouring a `Retry-After` in seconds up to 60 s; what is left is transient. 401
//! and 403 are refused at once, naming the permission the credential needs. A 3xx is refused
//! (not followed). Any other answer goes back to the target, which knows what a 404 or a 422
//! means for it. Bodies are read up to [`MAX_BODY`]; every text taken from an answer is
//! scrubbed of the credential and of every token the request carried before it is used.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use zeroize::Zeroizing;

use super::TargetError;
use super::exec::human;
use crate::scrub::Scrubber;
use crate::secret::Secret;

/// Longest answer read from a platform: environment listings are a few kilobytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// Longest `Retry-After` a platform may impose inside one push; beyond it the push gives up as
/// transient and the rollout tries again later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A platform's API, as one target calls it.
#[derive(Clone)]
pub struct Api {
    platform: &'static str,
    base: reqwest::Url,
    credential: Secret,
    headers: HeaderMap,
    timeout: Duration,
    attempts: u32,
    retry_delay: Duration,
    denied: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("platform", &self.platform)
            .field("host", &super::webhook::place(&self.base))
            .field("credential", &self.credential)
            .finish()
    }
}

/// A platform's answer that was neither retried nor refused outright.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its JSON body (`Null` when empty or not JSON).
    pub body: serde_json::Value,
    /// What the platform said, scrubbed: `message`, `error.message`, or the start of the text.
    pub message: String,
}

impl Answer {
    /// The body of a 2xx answer.
    ///
    /// # Errors
    /// [`TargetError::Refused`] for any other status, with the platform's message.
    pub fn ok(self, api: &Api, what: &str) -> Result<serde_json::Value, TargetError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(TargetError::Refused(format!(
                "{} {what}: answered {}: {}",
                api.platform, self.status, self.message
            )))
        }
    }
}

impl Api {
    /// A client for `platform` at `base`, sending `credential` as a bearer token; `denied` says
    /// which permission the credential needs, for a 401 or 403; one attempt may take `timeout`.
    ///
    /// # Errors
    /// [`TargetError::Refused`] when `base` is not https (plain http only to loopback), the
    /// credential is empty, or the client cannot be built.
    pub fn new(
        platform: &'static str,
        base: &reqwest::Url,
        credential: Secret,
        timeout: Duration,
        denied: String,
    ) -> Result<Api, TargetError> {
        match base.scheme() {
            "https" => {}
            "http" if crate::config::is_loopback(base) => {}
            _ => {
                return Err(TargetError::Refused(format!(
                    "{platform} API {}: expected an https URL (plain http only to loopback)",
                    super::webhook::place(base)
                )));
            }
        }
        if credential.is_empty() {
            return Err(TargetError::Refused(format!(
                "{platform} API: the `api_token` is empty"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                TargetError::Refused(format!(
                    "{platform} client: {}",
                    super::webhook::error_chain(e.without_url())
                ))
            })?;
        Ok(Api {
            platform,
            base: base.clone(),
            credential,
            headers: HeaderMap::new(),
            timeout,
            attempts: 4,
            retry_delay: Duration::from_millis(500),
            denied,
            http,
        })
    }

    /// Sends header `name: value` with every request (`Accept`, an API version).
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Api {
        self.headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    /// The platform's name, for messages.
    pub fn platform(&self) -> &'static str {
        self.platform
    }

    /// `base` with `segments` appended (each percent-encoded) and `query`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Calls `method` on `segments` with `query` and a JSON `body`, retrying as the module
    /// says; `hide` are the tokens the body carries (scrubbed from every answer).
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a 401, 403 or 3xx; [`TargetError::Transient`] when the
    /// last attempt failed to connect, timed out or got a 408, 409, 429 or 5xx.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
        hide: &[&Secret],
    ) -> Result<Answer, TargetError> {
        let url = self.url(segments, query);
        let what = format!("{method} /{}", segments.join("/"));
        let mut scrub = Scrubber::new();
        scrub.add(self.credential.expose());
        for s in hide {
            scrub.add(s.expose());
        }
        let body: Option<Zeroizing<Vec<u8>>> = match body {
            Some(b) => Some(Zeroizing::new(serde_json::to_vec(b).map_err(|e| {
                TargetError::Refused(format!("{} {what}: {e}", self.platform))
            })?)),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (why, retry_after) = match self
                .attempt(&method, &url, body.as_ref().map(|b| b.as_slice()), &scrub)
                .await
            {
                Ok(answer) => match answer.status.as_u16() {
                    401 | 403 => {
                        return Err(TargetError::Refused(format!(
                            "{} {what}: answered {}: {}; {}",
                            self.platform, answer.status, answer.message, self.denied
                        )));
                    }
                    408 | 409 | 429 | 500..=599 => (
                        format!("answered {}: {}", answer.status, answer.message),
                        answer.retry_after,
                    ),
                    300..=399 => {
                        return Err(TargetError::Refused(format!(
                            "{} {what}: answered {}; redirects are not followed, configure the API's final URL",
                            self.platform, answer.status
                        )));
                    }
                    _ => {
                        return Ok(Answer {
                            status: answer.status,
                            body: answer.body,
                            message: answer.message,
                        });
                    }
                },
                Err(why) => (why, None),
            };
            if attempt >= self.attempts {
                return Err(TargetError::Transient(format!(
                    "{} {what}: {why} ({attempt} attempts)",
                    self.platform
                )));
            }
            let mut delay = crate::graph::backoff(self.retry_delay, attempt);
            if let Some(wait) = retry_after {
                if wait > MAX_RETRY_AFTER {
                    return Err(TargetError::Transient(format!(
                        "{} {what}: {why}; it asked to wait {}, longer than {}",
                        self.platform,
                        human(wait),
                        human(MAX_RETRY_AFTER)
                    )));
                }
                delay = delay.max(wait);
            }
            tracing::debug!(platform = self.platform, %what, attempt, delay_ms = delay.as_millis() as u64, error = %why, "platform call failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &reqwest::Url,
        body: Option<&[u8]>,
        scrub: &Scrubber,
    ) -> Result<RawAnswer, String> {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .bearer_auth(self.credential.expose());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_vec());
        }
        let mut resp = req.send().await.map_err(|e| self.transport(e, scrub))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transport(e, scrub))? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "answered {status} with a body larger than {} KiB, not read further",
                    MAX_BODY / 1024
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let bytes = Zeroizing::new(scrub.scrub_bytes(&bytes));
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = message_of(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
        Ok(RawAnswer {
            status,
            body,
            message: if message.trim().is_empty() {
                "(no message)".into()
            } else {
                message
            },
            retry_after,
        })
    }

    fn transport(&self, e: reqwest::Error, scrub: &Scrubber) -> String {
        let why = if e.is_timeout() {
            format!("no answer within {}", human(self.timeout))
        } else if e.is_connect() {
            format!(
                "could not connect: {}",
                super::webhook::error_chain(e.without_url())
            )
        } else {
            super::webhook::error_chain(e.without_url())
        };
        format!(
            "{} ({})",
            scrub.scrub(&why),
            super::webhook::place(&self.base)
        )
    }
}

struct RawAnswer {
    status: StatusCode,
    body: serde_json::Value,
    message: String,
    retry_after: Option<Duration>,
}

/// The platform's own words: GitHub, Heroku and Render say `message` (Heroku adds an `id`),
/// Vercel says `error.message` (and `error.code`).
fn message_of(body: &serde_json::Value) -> Option<String> {
    let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
    if let Some(m) = s(&body["message"]) {
        return Some(match s(&body["id"]) {
            Some(id) => format!("{m} (id {id})"),
            None => m,
        });
    }
    let e = &body["error"];
    s(&e["message"]).map(|m| match s(&e["code"]) {
        Some(code) => format!("{m} (code {code})"),
        None => m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_one_by_one() {
        let api = Api::new(
            "Test",
            &"https://api.example.com/v1/".parse().unwrap(),
            Secret::new("credential-123456"),
            Duration::from_secs(5),
            String::new(),
        )
        .unwrap();
        let u = api.url(
            &["apps", "my app/../x", "config-vars"],
            &[("upsert", "true")],
        );
        assert_eq!(
            u.as_str(),
            "https://api.example.com/v1/apps/my%20app%2F..%2Fx/config-vars?upsert=true"
        );
    }

    #[test]
    fn plain_http_only_to_loopback_and_never_an_empty_credential() {
        let mk = |url: &str, cred: &str| {
            Api::new(
                "Test",
                &url.parse().unwrap(),
                Secret::new(cred),
                Duration::from_secs(5),
                String::new(),
            )
        };
        assert!(mk("http://127.0.0.1:9/", "credential-123456").is_ok());
        assert!(mk("http://api.example.com/", "credential-123456").is_err());
        assert!(mk("https://api.example.com/", "").is_err());
    }

    #[test]
    fn messages_of_each_platform_are_found() {
        let m = |v: serde_json::Value| message_of(&v);
        assert_eq!(
            m(serde_json::json!({"message": "Bad credentials", "documentation_url": "x"})),
            Some("Bad credentials".into())
        );
        assert_eq!(
            m(serde_json::json!({"id": "forbidden", "message": "You do not have access"})),
            Some("You do not have access (id forbidden)".into())
        );
        assert_eq!(
            m(serde_json::json!({"error": {"code": "forbidden", "message": "Not authorized"}})),
            Some("Not authorized (code forbidden)".into())
        );
        assert_eq!(m(serde_json::json!([])), None);
    }
}
