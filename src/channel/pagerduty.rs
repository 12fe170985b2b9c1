//! PagerDuty Events API v2: `trigger` while an alert fires, `resolve` with the same
//! `dedup_key` when it ends; one-off news (a [`Status::Notice`]) is not an incident and is
//! skipped.
//!
//! The shapes and limits are PagerDuty's "Send an Alert Event" and "Events API v2 Overview"
//! pages (`docs/channels.md` has the table and the sources): `routing_key` (the integration
//! key, 32 characters), `event_action`, `dedup_key` (at most 255 characters),
//! `payload.summary` (at most 1024), `payload.source`, `payload.severity` (critical, error,
//! warning, info), and the optional `timestamp`, `component`, `group`, `class`,
//! `custom_details`, `links` and `client`. PagerDuty answers 202 when it took the event, 400
//! with an `errors` list naming what is wrong, 429 when throttled and 5xx when it failed.
//!
//! The routing key is the receiver's secret. [`PagerDuty::payload`] is everything but it, so
//! a payload can be logged, shown or queued; [`PagerDuty::send`] adds it to the body it posts,
//! and every text of PagerDuty's answer is scrubbed of it before it becomes an error.

use std::time::Duration;

use super::{Alert, ChannelError, Status, cut, post_json};
use crate::secret::Secret;

/// Where PagerDuty takes events for an account in its US service region (an EU account's is
/// `https://events.eu.pagerduty.com/v2/enqueue`, given with [`PagerDuty::with_url`]).
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The longest `payload.summary` PagerDuty accepts, in characters.
pub const MAX_SUMMARY: usize = 1024;

/// The longest `dedup_key` PagerDuty accepts, in characters.
pub const MAX_DEDUP_KEY: usize = 255;

/// The `payload.source` used when the host's name cannot be read.
const FALLBACK_SOURCE: &str = "tokenwarden";

/// How much of PagerDuty's answer an error keeps.
const MAX_DETAIL: usize = 300;

/// The most items of a list (to-do, facts) `custom_details` carries, and the longest one:
/// with them an event stays far below PagerDuty's 512 KB, whatever the alert holds.
const MAX_ITEMS: usize = 50;
const MAX_ITEM: usize = 1000;

/// A configured PagerDuty receiver: an Events API v2 integration's routing key.
#[derive(Debug)]
pub struct PagerDuty {
    /// The routing (integration) key: the secret.
    endpoint: Secret,
    timeout: Duration,
    /// The events URL: [`EVENTS_URL`] unless a test points it at loopback.
    url: String,
    /// `payload.source`: the host tokenwarden runs on, unless configured.
    source: String,
}

impl PagerDuty {
    /// A receiver that sends events with `endpoint` as the routing key, each within `timeout`,
    /// to [`EVENTS_URL`], naming this host as the source.
    pub fn new(endpoint: Secret, timeout: Duration) -> PagerDuty {
        PagerDuty {
            endpoint,
            timeout,
            url: EVENTS_URL.to_string(),
            source: host_name(),
        }
    }

    /// The same receiver posting to `url` instead of [`EVENTS_URL`] (a test's loopback
    /// receiver, a relay). The URL is not a secret: it is named in transport errors.
    pub fn with_url(mut self, url: String) -> PagerDuty {
        self.url = url;
        self
    }

    /// The same receiver with `source` as `payload.source` (blank keeps the host's name, as
    /// PagerDuty refuses an event without a source).
    pub fn with_source(mut self, source: String) -> PagerDuty {
        if !source.trim().is_empty() {
            self.source = source.trim().to_string();
        }
        self
    }

    /// The event for `alert`, without the routing key (which only [`PagerDuty::send`] adds);
    /// `None` for a [`Status::Notice`], which is news, not an incident.
    pub fn payload(&self, alert: &Alert) -> Option<serde_json::Value> {
        let dedup_key = cut(&alert.key, MAX_DEDUP_KEY);
        match alert.status {
            Status::Notice => None,
            // PagerDuty needs nothing more to resolve: the key names the alert.
            Status::Resolved => Some(serde_json::json!({
                "event_action": "resolve",
                "dedup_key": dedup_key,
            })),
            Status::Firing => {
                let mut event = serde_json::json!({
                    "event_action": "trigger",
                    "dedup_key": dedup_key,
                    "payload": {
                        "summary": cut(&alert.summary(), MAX_SUMMARY),
                        "source": self.source,
                        "severity": alert.severity.word(),
                        "timestamp": alert.started_at.to_string(),
                        "component": alert.token,
                        "group": "tokenwarden",
                        "class": alert.condition,
                        "custom_details": details(alert),
                    },
                    "client": "tokenwarden",
                });
                if let Some(runbook) = &alert.runbook {
                    event["links"] = serde_json::json!([{ "href": runbook, "text": "Runbook" }]);
                }
                Some(event)
            }
        }
    }

    /// Delivers `alert` (nothing is sent for a notice).
    ///
    /// # Errors
    /// [`ChannelError::Retry`] for 429, 5xx, a timeout or a transport failure (with
    /// PagerDuty's `Retry-After` when given); [`ChannelError::Rejected`] for 400 and 413,
    /// naming PagerDuty's `errors`; [`ChannelError::Config`] for 401, 403 and 404 (the
    /// routing key or URL refused), a redirect (never followed) or a URL that is not allowed.
    pub async fn send(&self, client: &reqwest::Client, alert: &Alert) -> Result<(), ChannelError> {
        let Some(mut body) = self.payload(alert) else {
            return Ok(());
        };
        body["routing_key"] = serde_json::Value::String(self.endpoint.expose().to_string());
        let answer = post_json(
            client,
            &self.url,
            &body,
            self.timeout,
            &[self.endpoint.expose()],
        )
        .await?;
        let s = answer.status;
        let detail = describe(&answer.body);
        match s {
            200..=299 => Ok(()),
            // Redirects are never followed (a secret would travel on): the URL is stale.
            300..=399 => Err(ChannelError::Config(format!(
                "PagerDuty answered {s}, a redirect, which is not followed: check the URL"
            ))),
            401 | 403 | 404 => Err(ChannelError::Config(format!(
                "PagerDuty refused the routing key or URL ({s}): {detail}"
            ))),
            429 | 500..=599 => Err(super::classify("PagerDuty", &answer, &detail)),
            _ => Err(ChannelError::Rejected(format!(
                "PagerDuty refused the event ({s}): {detail}"
            ))),
        }
    }
}

/// The facts of `alert` as PagerDuty's `custom_details`: what on-call needs on the incident
/// page without opening the email. Fingerprints only, never a token.
fn details(alert: &Alert) -> serde_json::Value {
    let mut d = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        d.insert(k.to_string(), v);
    };
    put("state", alert.state.clone().into());
    if let Some(left) = &alert.left {
        put("time left", left.clone().into());
    }
    if let Some(deadline) = &alert.deadline {
        put("deadline", deadline.clone().into());
    }
    if let Some(at) = alert.deadline_at {
        put("deadline at", at.to_string().into());
    }
    if let Some(fp) = &alert.fingerprint {
        put("fingerprint", fp.clone().into());
    }
    if !alert.todo.is_empty() {
        put("what you must do", list(&alert.todo));
    }
    if !alert.facts.is_empty() {
        put("facts", list(&alert.facts));
    }
    put("alertname", alert.alertname.clone().into());
    if alert.test {
        put(
            "test",
            "a test alert from `tokenwarden notify test`: nothing is wrong".into(),
        );
    }
    serde_json::Value::Object(d)
}

/// `items`, each cut to [`MAX_ITEM`], at most [`MAX_ITEMS`] of them, the last saying how many
/// more the email has.
fn list(items: &[String]) -> serde_json::Value {
    let mut out: Vec<String> = items
        .iter()
        .take(MAX_ITEMS)
        .map(|i| cut(i, MAX_ITEM))
        .collect();
    if items.len() > MAX_ITEMS {
        out.push(format!(
            "…and {} more: the email has them all",
            items.len() - MAX_ITEMS
        ));
    }
    out.into()
}

/// PagerDuty's answer in a line: its `message` and the `errors` it lists (each names the
/// field, as in "Length of 'routing_key' is incorrect"), or the start of a body that is not
/// PagerDuty's JSON. `body` is already scrubbed.
fn describe(body: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return cut(body.trim(), MAX_DETAIL);
    };
    let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let errors: Vec<&str> = v
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let text = match (message.is_empty(), errors.is_empty()) {
        (true, true) => body.trim().to_string(),
        (false, true) => message.to_string(),
        (true, false) => errors.join("; "),
        (false, false) => format!("{message}: {}", errors.join("; ")),
    };
    cut(&text, MAX_DETAIL)
}

/// This host's name, PagerDuty's "preferably a hostname": the kernel's, else
/// `/etc/hostname`'s, else `tokenwarden`. Read from files because the crate forbids
/// `unsafe` (no `gethostname` call).
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty() && s.len() <= 255)
        .unwrap_or_else(|| FALLBACK_SOURCE.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::channel::Severity;

    /// An alert with every field set, as the daemon makes them (shared by the channel
    /// modules' tests).
    pub(crate) fn sample(status: Status, severity: Severity) -> Alert {
        Alert {
            id: "tokenwarden-prod-expiry-7d".into(),
            key: "tokenwarden/prod/expiry".into(),
            token: "prod".into(),
            condition: "expiry".into(),
            alertname: "TokenwardenTokenExpiring".into(),
            severity,
            status,
            state: "CRITICAL".into(),
            word: "CRITICAL".into(),
            headline: "the token expires in 2 days".into(),
            left: Some("2 days 3 hours".into()),
            deadline: Some("Sun 29 Nov 2026 19:00 UTC".into()),
            deadline_at: Some("2026-11-29T19:00:00Z".parse().unwrap()),
            todo: vec![
                "Stage a new token: tokenwarden stage prod".into(),
                "Check that the rotation ran: tokenwarden status".into(),
            ],
            facts: vec!["token fingerprint 1a2b3c4d".into(), "app 1234".into()],
            fingerprint: Some("1a2b3c4d".into()),
            runbook: Some("https://runbooks.example/tokenwarden#expiry".into()),
            started_at: "2026-11-27T16:00:00Z".parse().unwrap(),
            test: false,
        }
    }

    fn pd() -> PagerDuty {
        PagerDuty::new(
            Secret::new("R0UTINGKEY0123456789abcdefABCDEF"),
            Duration::from_secs(5),
        )
        .with_source("host-1".into())
    }

    #[test]
    fn firing_is_a_trigger_with_every_documented_field_and_no_routing_key() {
        let a = sample(Status::Firing, Severity::Critical);
        let p = pd().payload(&a).unwrap();
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "tokenwarden/prod/expiry");
        assert_eq!(p["client"], "tokenwarden");
        let pl = &p["payload"];
        assert_eq!(pl["summary"], "CRITICAL prod: the token expires in 2 days");
        assert_eq!(pl["source"], "host-1");
        assert_eq!(pl["severity"], "critical");
        assert_eq!(pl["timestamp"], "2026-11-27T16:00:00Z");
        assert_eq!(pl["component"], "prod");
        assert_eq!(pl["group"], "tokenwarden");
        assert_eq!(pl["class"], "expiry");
        let d = &pl["custom_details"];
        assert_eq!(d["fingerprint"], "1a2b3c4d");
        assert_eq!(d["time left"], "2 days 3 hours");
        assert_eq!(d["deadline at"], "2026-11-29T19:00:00Z");
        assert_eq!(
            d["what you must do"][0],
            "Stage a new token: tokenwarden stage prod"
        );
        assert_eq!(d["state"], "CRITICAL");
        assert_eq!(
            p["links"],
            serde_json::json!([{"href": "https://runbooks.example/tokenwarden#expiry", "text": "Runbook"}])
        );
        assert!(p.get("routing_key").is_none());
        assert!(!p.to_string().contains("R0UTINGKEY"));
    }

    #[test]
    fn each_severity_maps_to_its_word() {
        for (s, w) in [
            (Severity::Critical, "critical"),
            (Severity::Error, "error"),
            (Severity::Warning, "warning"),
            (Severity::Info, "info"),
        ] {
            let p = pd().payload(&sample(Status::Firing, s)).unwrap();
            assert_eq!(p["payload"]["severity"], w);
        }
    }

    #[test]
    fn resolved_is_a_bare_resolve_with_the_same_key_and_notice_is_skipped() {
        let fire = pd()
            .payload(&sample(Status::Firing, Severity::Warning))
            .unwrap();
        let res = pd()
            .payload(&sample(Status::Resolved, Severity::Warning))
            .unwrap();
        assert_eq!(
            res,
            serde_json::json!({"event_action": "resolve", "dedup_key": fire["dedup_key"]})
        );
        assert!(
            pd().payload(&sample(Status::Notice, Severity::Info))
                .is_none()
        );
    }

    #[test]
    fn summary_and_key_are_cut_to_the_limits_and_a_test_says_so() {
        let mut a = sample(Status::Firing, Severity::Critical);
        a.headline = "x".repeat(5000);
        a.key = "k".repeat(400);
        a.runbook = None;
        a.test = true;
        let p = pd().payload(&a).unwrap();
        let summary = p["payload"]["summary"].as_str().unwrap();
        assert_eq!(summary.chars().count(), MAX_SUMMARY);
        assert!(summary.starts_with("[TEST] "));
        assert_eq!(
            p["dedup_key"].as_str().unwrap().chars().count(),
            MAX_DEDUP_KEY
        );
        assert!(p.get("links").is_none());
        assert!(p["payload"]["custom_details"]["test"].is_string());
    }

    #[test]
    fn long_lists_are_capped_far_below_the_512_kb_limit() {
        let mut a = sample(Status::Firing, Severity::Critical);
        a.todo = (0..500)
            .map(|i| format!("{i} {}", "t".repeat(5000)))
            .collect();
        a.facts = a.todo.clone();
        let p = pd().payload(&a).unwrap();
        let todo = p["payload"]["custom_details"]["what you must do"]
            .as_array()
            .unwrap();
        assert_eq!(todo.len(), MAX_ITEMS + 1);
        assert_eq!(todo[MAX_ITEMS], "…and 450 more: the email has them all");
        assert!(p.to_string().len() < 256 * 1024);
    }

    #[test]
    fn a_blank_source_keeps_the_host_name() {
        let p = PagerDuty::new(Secret::new("k"), Duration::from_secs(1)).with_source("  ".into());
        assert!(!p.source.is_empty());
        assert_eq!(p.source, host_name());
    }

    #[test]
    fn describe_names_pagerdutys_errors() {
        let body = r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#;
        assert_eq!(
            describe(body),
            "Event object is invalid: Length of 'routing_key' is incorrect (should be 32 characters)"
        );
        assert_eq!(describe("  upstream down "), "upstream down");
        assert_eq!(describe(&"z".repeat(1000)).chars().count(), MAX_DETAIL);
    }
}
