//! On-call channels beside email: Alertmanager, PagerDuty, Slack and Microsoft Teams.
//!
//! Every alert tokenwarden decides (the same decisions, keys and ledger as its emails) is
//! also turned into one [`Alert`]: the email's first screen as structured, secret-free facts.
//! Each configured receiver has its own queue (see [`hub`]), so one receiver's outage never
//! delays another's alerts, and one module per kind turns an [`Alert`] into the payload its
//! receiver documents and sends it (through [`post_json`]).
//!
//! Endpoints that hold a secret (a Slack or Teams webhook URL, a PagerDuty routing key) are
//! [`crate::secret::Secret`]s: they never reach an error, a log line or a queue file, and every
//! error text that came from a receiver is scrubbed of them before it is kept.

pub mod alertmanager;
pub mod hub;
pub mod pagerduty;
pub mod slack;
pub mod teams;

use std::time::Duration;

pub use crate::config::receivers::url_allowed;
pub use hub::{Channels, Health, ReceiverState, SetupError};
pub use pagerduty::host_name;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::config::receivers::Severity;

/// Whether an alert starts (or repeats), ends, or is one-off news.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The condition holds: PagerDuty `trigger`, an Alertmanager alert without an end.
    Firing,
    /// The condition ended: PagerDuty `resolve` with the same key, Alertmanager `endsAt`.
    Resolved,
    /// One-off news with no condition behind it (a rotation done, drift repaired, a test):
    /// a message for chat channels; incident channels (PagerDuty, Alertmanager) skip it.
    Notice,
}

/// One alert as every channel sees it: what the email's first screen says, as fields, and
/// never a token or a secret (tokens appear by fingerprint only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// The queue id: the email's id for the same decision (`[a-z0-9-]{1,128}`), so an alert
    /// decided twice is queued once, exactly like its email.
    pub id: String,
    /// The identity of the condition, stable across repeats and its resolution:
    /// `tokenwarden/<token>/<condition>`. PagerDuty's `dedup_key`.
    pub key: String,
    /// The token's name, or `tokenwarden` for an alert about tokenwarden itself.
    pub token: String,
    /// The condition's family (`expiry`, `invalid`, `unusable`, `cannot-check`,
    /// `credentials`, `store`, `rotation`, `targets`, `channel-<receiver>`, `host`, `test`).
    pub condition: String,
    /// Alertmanager's `alertname` (`TokenwardenTokenExpiring`, ...).
    pub alertname: String,
    /// How urgent.
    pub severity: Severity,
    /// Firing, resolved or one-off news.
    pub status: Status,
    /// The token's state word (`OK`, `WARNING`, `CRITICAL`, `EXPIRED`, `INVALID`, `UNKNOWN`),
    /// or the email's word for alerts that are not about a token's state.
    pub state: String,
    /// The email's subject word in capitals (`CRITICAL`, `ROTATION FAILED`, `RESOLVED`).
    pub word: String,
    /// One line: what is wrong (the email's headline, without the token's name).
    pub headline: String,
    /// The time left, in words, when the alert is about a deadline.
    pub left: Option<String>,
    /// The deadline, in words.
    pub deadline: Option<String>,
    /// When the deadline falls, when known.
    pub deadline_at: Option<Timestamp>,
    /// What a person must do, in order (the email's "What you must do").
    pub todo: Vec<String>,
    /// The facts (the email's "Facts"), fingerprints only.
    pub facts: Vec<String>,
    /// The fingerprint of the token version the alert is about.
    pub fingerprint: Option<String>,
    /// Where the runbook for this alert is (from the config), when set.
    pub runbook: Option<String>,
    /// When the condition started (the first decision).
    pub started_at: Timestamp,
    /// A test alert from `tokenwarden notify test`: every payload says so plainly.
    pub test: bool,
}

impl Alert {
    /// The headline with the token's name: the summary line of every payload.
    pub fn summary(&self) -> String {
        let test = if self.test { "[TEST] " } else { "" };
        format!("{test}{} {}: {}", self.word, self.token, self.headline)
    }
}

/// The condition families: what an alert is about, its Alertmanager `alertname`, and what a
/// resolution ends. A token's recovery ends [`TOKEN_FAMILIES`].
pub mod family {
    /// Expiry approaching or passed (thresholds, critical, expired).
    pub const EXPIRY: &str = "expiry";
    /// Meta says the token is invalid.
    pub const INVALID: &str = "invalid";
    /// Valid but cannot do the job (a scope, the WABA, the phone number).
    pub const UNUSABLE: &str = "unusable";
    /// Checks keep failing.
    pub const CANNOT_CHECK: &str = "cannot-check";
    /// Meta refused tokenwarden's own app credentials (an app's alert, keyed by the app), or
    /// will not inspect a token with them (the token's, keyed by the token).
    pub const CREDENTIALS: &str = "credentials";
    /// The token cannot be read from its store.
    pub const STORE: &str = "store";
    /// A rotation failed or its candidate was rejected.
    pub const ROTATION: &str = "rotation";
    /// Targets do not hold the current token.
    pub const TARGETS: &str = "targets";
    /// tokenwarden's own host (a full disk, a state file set aside).
    pub const HOST: &str = "host";
    /// Another receiver keeps failing: `channel-<receiver>`, one condition per receiver.
    pub const CHANNEL_PREFIX: &str = "channel-";
    /// `tokenwarden notify test`.
    pub const TEST: &str = "test";
}

/// The families a token's recovery ends.
pub const TOKEN_FAMILIES: &[&str] = &[
    family::EXPIRY,
    family::INVALID,
    family::UNUSABLE,
    family::CANNOT_CHECK,
    family::CREDENTIALS,
    family::STORE,
];

/// Alertmanager's `alertname` for a family.
pub fn alertname(family: &str) -> &'static str {
    match family {
        family::EXPIRY => "TokenwardenTokenExpiry",
        family::INVALID => "TokenwardenTokenInvalid",
        family::UNUSABLE => "TokenwardenTokenUnusable",
        family::CANNOT_CHECK => "TokenwardenCannotCheck",
        family::CREDENTIALS => "TokenwardenOwnCredentials",
        family::STORE => "TokenwardenStoreProblem",
        family::ROTATION => "TokenwardenRotationFailed",
        family::TARGETS => "TokenwardenTargetFailing",
        family::HOST => "TokenwardenHost",
        f if f.starts_with(family::CHANNEL_PREFIX) => "TokenwardenChannelFailing",
        _ => "TokenwardenTest",
    }
}

/// What the caller knows of an alert beyond its email: its family, urgency and status.
#[derive(Debug, Clone, Copy)]
pub struct Signal<'a> {
    /// The family (see [`family`]).
    pub family: &'a str,
    /// How urgent.
    pub severity: Severity,
    /// Firing, resolved or news.
    pub status: Status,
    /// The token's state word, or the email's word when the alert is not about a state.
    pub state: &'a str,
    /// The fingerprint of the token version, when known.
    pub fingerprint: Option<crate::secret::Fingerprint>,
    /// The families this alert ends (a recovery: [`TOKEN_FAMILIES`]).
    pub resolves: &'a [&'a str],
}

impl Signal<'static> {
    /// The signal of a token's alert for `condition` (`None`: its recovery) while the token is
    /// in `state`.
    pub fn of_token(
        condition: Option<crate::policy::Condition>,
        state: crate::policy::State,
        fingerprint: Option<crate::secret::Fingerprint>,
    ) -> Signal<'static> {
        use crate::policy::Condition as C;
        let (family, severity, status) = match condition {
            None => (family::EXPIRY, Severity::Info, Status::Resolved),
            Some(C::Threshold(_)) => (family::EXPIRY, Severity::Warning, Status::Firing),
            Some(C::Critical | C::Expired) => (family::EXPIRY, Severity::Critical, Status::Firing),
            Some(C::Invalid) => (family::INVALID, Severity::Critical, Status::Firing),
            Some(C::Unusable) => (family::UNUSABLE, Severity::Critical, Status::Firing),
            Some(C::CannotCheck) => (family::CANNOT_CHECK, Severity::Warning, Status::Firing),
            Some(C::OtherApp) => (family::CREDENTIALS, Severity::Critical, Status::Firing),
            Some(C::StoreProblem) => (family::STORE, Severity::Error, Status::Firing),
        };
        Signal {
            family,
            severity,
            status,
            state: state.word(),
            fingerprint,
            resolves: if condition.is_none() {
                TOKEN_FAMILIES
            } else {
                &[]
            },
        }
    }
}

impl Alert {
    /// The alert for the email `id` about `token`, from its rendered `summary` and `signal`.
    pub fn new(
        id: &str,
        token: &str,
        summary: &crate::alert::Summary,
        signal: &Signal<'_>,
        now: Timestamp,
    ) -> Alert {
        Alert {
            id: id.to_string(),
            key: format!("tokenwarden/{token}/{}", signal.family),
            token: token.to_string(),
            condition: signal.family.to_string(),
            alertname: alertname(signal.family).to_string(),
            severity: signal.severity,
            status: signal.status,
            state: signal.state.to_string(),
            word: summary.word.clone(),
            headline: summary.headline.clone(),
            left: summary.left.clone(),
            deadline: summary.deadline.clone(),
            deadline_at: summary.deadline_at,
            todo: summary.todo.clone(),
            facts: summary.facts.clone(),
            fingerprint: signal.fingerprint.map(|f| f.to_string()),
            runbook: None,
            started_at: now,
            test: false,
        }
    }
}

/// Why a receiver did not take an alert, named by what the queue does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Try again later (a timeout, a refused connection, 429, 5xx); `after` is the receiver's
    /// own `Retry-After` when it gave one.
    #[error("temporary failure, will retry: {reason}")]
    Retry {
        /// What happened, scrubbed.
        reason: String,
        /// The receiver's requested wait, capped.
        after: Option<Duration>,
    },
    /// The receiver refused this payload (400, 413, 422): sending it again will not help.
    /// The text names the field the receiver named.
    #[error("refused by the receiver: {0}")]
    Rejected(String),
    /// Fix the config: credentials or routing refused (401, 403, 404), a URL not allowed.
    #[error("receiver configuration problem: {0}")]
    Config(String),
}

/// The longest wait a receiver's `Retry-After` can impose on a queue.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The most of a receiver's answer read (an error body is kept only in part, scrubbed).
pub const MAX_ANSWER: usize = 64 * 1024;

/// How long one delivery may take, connection included, unless the receiver's config says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The answer of a receiver, read within [`MAX_ANSWER`].
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, in seconds, when present and numeric.
    pub retry_after: Option<Duration>,
    /// The body, scrubbed of every secret of the request, cut to [`MAX_ANSWER`].
    pub body: String,
}

/// Posts `body` as JSON to `url` and reads the answer: no redirect followed, no proxy from
/// the environment, `timeout` for the whole exchange, the answer capped and scrubbed of
/// `secrets` (the URL itself, a routing key). A transport error names only the host.
///
/// # Errors
/// [`ChannelError::Retry`] for a transport failure or a timeout; [`ChannelError::Config`] for
/// a URL that is not `https://` (or `http://` to loopback).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
    secrets: &[&str],
) -> Result<Answer, ChannelError> {
    let mut scrubber = crate::scrub::Scrubber::new();
    for s in secrets {
        scrubber.add(s);
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| ChannelError::Config("the receiver's URL is not a URL".into()))?;
    let host = parsed.host_str().unwrap_or("?").to_string();
    if !url_allowed(&parsed) {
        return Err(ChannelError::Config(format!(
            "the receiver's URL to {host} must be https:// (http:// only to loopback)"
        )));
    }
    let send = async {
        let resp = client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default())
            .send()
            .await
            .map_err(|e| ChannelError::Retry {
                reason: scrubber.scrub(&format!(
                    "cannot reach {host}: {}",
                    crate::graph::error_chain(e.without_url())
                )),
                after: None,
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        // A long or broken answer is dropped, not an error: the status already says what
        // happened.
        let bytes: Vec<u8> = crate::graph::read_capped(resp, MAX_ANSWER)
            .await
            .unwrap_or_default();
        let body = scrubber.scrub(&String::from_utf8_lossy(&bytes));
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(r) => r,
        Err(_) => Err(ChannelError::Retry {
            reason: format!("{host} did not answer within {}s", timeout.as_secs()),
            after: None,
        }),
    }
}

/// The usual reading of a status that is not a success: 429 and 5xx are retried (with the
/// receiver's `Retry-After`), 401/403/404 are the config, any other 4xx is this payload.
/// `what` names the receiver; `detail` is the scrubbed answer, kept short.
pub fn classify(what: &str, answer: &Answer, detail: &str) -> ChannelError {
    let s = answer.status;
    let detail = cut(detail, 300);
    match s {
        429 | 500..=599 => ChannelError::Retry {
            reason: format!("{what} answered {s}: {detail}"),
            after: answer.retry_after,
        },
        401 | 403 | 404 => ChannelError::Config(format!("{what} answered {s}: {detail}")),
        _ => ChannelError::Rejected(format!("{what} answered {s}: {detail}")),
    }
}

/// `text` cut to at most `max` characters (not bytes), with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_allowed() {
        let ok = |u: &str| url_allowed(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://events.pagerduty.com/v2/enqueue"));
        assert!(ok("http://127.0.0.1:9093"));
        assert!(ok("http://[::1]:9093"));
        assert!(ok("http://localhost:9093"));
        assert!(!ok("http://alertmanager.internal:9093"));
        assert!(!ok("ftp://127.0.0.1/"));
    }

    #[test]
    fn cut_counts_characters_and_marks_the_cut() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("ééééé", 3).chars().count(), 3);
    }
}
