//! The `[[receiver]]` tables: on-call channels beside `[email]` (Alertmanager, PagerDuty,
//! Slack, Microsoft Teams), typed and checked here like every other section, so `config` never
//! depends on `channel` (`channel` builds its senders from this).
//!
//! ```toml
//! [[receiver]]
//! name = "pager"
//! kind = "pagerduty"
//! routing_key = { env = "PAGERDUTY_ROUTING_KEY" }
//! severities = ["critical", "error"]
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SecretRef;

/// How urgent an alert is, in the four words PagerDuty's Events API v2 defines (and
/// Alertmanager's `severity` label carries). A receiver's `severities` lists the ones it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// News with nothing to do (a rotation done, a test).
    Info,
    /// Someone should look before the deadline.
    Warning,
    /// Something failed that tokenwarden cannot fix alone (a rotation, a store).
    Error,
    /// Messaging stops, or is about to.
    Critical,
}

impl Severity {
    /// The word, as configs and payloads spell it.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// Every severity, least urgent first.
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];
}

/// Which kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Alertmanager's `/api/v2/alerts`, at one or more `urls` (an HA pair gets every alert).
    Alertmanager,
    /// PagerDuty Events API v2, with a `routing_key`.
    Pagerduty,
    /// A Slack incoming webhook (`webhook_url`).
    Slack,
    /// A Microsoft Teams Workflows webhook (`webhook_url`).
    Teams,
}

impl ReceiverKind {
    /// The word, as the config spells it.
    pub fn word(self) -> &'static str {
        match self {
            ReceiverKind::Alertmanager => "alertmanager",
            ReceiverKind::Pagerduty => "pagerduty",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Teams => "teams",
        }
    }
}

/// Default time one delivery may take, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval at which active alerts are sent to Alertmanager again (as Prometheus
/// does); each carries an `endsAt` four intervals ahead, so a stopped tokenwarden's alerts
/// end by themselves.
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);
/// Default time a receiver may keep failing before the other channels are told.
pub const DEFAULT_FAILING_AFTER: Duration = Duration::from_secs(2 * 3600);

/// One `[[receiver]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Unique name: the queue's directory, the metrics label, `notify test --channel NAME`.
    pub name: String,
    /// Which kind of receiver.
    pub kind: ReceiverKind,
    /// Alertmanager only: its base URLs (`http://127.0.0.1:9093`); every one gets every alert.
    pub urls: Option<Vec<String>>,
    /// PagerDuty only: the events URL (default `https://events.pagerduty.com/v2/enqueue`;
    /// the EU service is `https://events.eu.pagerduty.com/v2/enqueue`).
    pub url: Option<String>,
    /// PagerDuty only: the integration's routing key, by reference.
    pub routing_key: Option<SecretRef>,
    /// Slack and Teams only: the webhook URL (it is the credential), by reference.
    pub webhook_url: Option<SecretRef>,
    /// PagerDuty only: `payload.source` (default: this host's name).
    pub source: Option<String>,
    /// The severities this receiver takes (default: all four).
    pub severities: Option<Vec<Severity>>,
    /// The longest one delivery may take, such as `"10s"` (default 10 s).
    pub timeout: Option<String>,
    /// Alertmanager only: how often active alerts are sent again (default `"1m"`).
    pub resend: Option<String>,
    /// How long this receiver may keep failing before the other channels are told
    /// (default `"2h"`).
    pub failing_after: Option<String>,
    /// A runbook URL every alert links to (PagerDuty `links`, Alertmanager `runbook_url`).
    pub runbook: Option<String>,
}

impl ReceiverConfig {
    /// Whether this receiver takes alerts of `severity`.
    pub fn takes(&self, severity: Severity) -> bool {
        self.severities
            .as_ref()
            .is_none_or(|list| list.contains(&severity))
    }

    /// The delivery timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .as_deref()
            .and_then(super::parse_duration)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Alertmanager's re-send interval.
    pub fn resend(&self) -> Duration {
        self.resend
            .as_deref()
            .and_then(super::parse_duration)
            .unwrap_or(DEFAULT_RESEND)
    }

    /// How long failing is tolerated before the other channels hear of it.
    pub fn failing_after(&self) -> Duration {
        self.failing_after
            .as_deref()
            .and_then(super::parse_duration)
            .unwrap_or(DEFAULT_FAILING_AFTER)
    }

    /// The secret references this receiver reads, with their field names.
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut out = Vec::new();
        if let Some(r) = &self.routing_key {
            out.push(("routing_key", r));
        }
        if let Some(r) = &self.webhook_url {
            out.push(("webhook_url", r));
        }
        out
    }

    /// Problems a config check must report, as (field relative to this receiver, message):
    /// a missing or misplaced field for the kind, a name that cannot be a directory, a URL
    /// that is not `https://` (or `http://` to loopback), an empty severity list, a bad
    /// duration. Resolves no secret and opens no connection.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let kind = self.kind.word();
        if !crate::state::queue::valid_id(&self.name) || self.name.len() > 64 {
            out.push((
                "name".into(),
                format!(
                    "{:?} must be 1 to 64 of a-z, 0-9 and - (it names the receiver's queue and metrics)",
                    self.name
                ),
            ));
        }
        let needs = |field: &str, present: bool, out: &mut Vec<(String, String)>| {
            if !present {
                out.push((field.into(), format!("is required for kind = \"{kind}\"")));
            }
        };
        let refuses = |field: &str, present: bool, out: &mut Vec<(String, String)>| {
            if present {
                out.push((field.into(), format!("does not apply to kind = \"{kind}\"")));
            }
        };
        match self.kind {
            ReceiverKind::Alertmanager => {
                needs(
                    "urls",
                    self.urls.as_ref().is_some_and(|u| !u.is_empty()),
                    &mut out,
                );
                refuses("url", self.url.is_some(), &mut out);
                refuses("routing_key", self.routing_key.is_some(), &mut out);
                refuses("webhook_url", self.webhook_url.is_some(), &mut out);
                refuses("source", self.source.is_some(), &mut out);
            }
            ReceiverKind::Pagerduty => {
                needs("routing_key", self.routing_key.is_some(), &mut out);
                refuses("urls", self.urls.is_some(), &mut out);
                refuses("webhook_url", self.webhook_url.is_some(), &mut out);
                refuses("resend", self.resend.is_some(), &mut out);
            }
            ReceiverKind::Slack | ReceiverKind::Teams => {
                needs("webhook_url", self.webhook_url.is_some(), &mut out);
                refuses("urls", self.urls.is_some(), &mut out);
                refuses("url", self.url.is_some(), &mut out);
                refuses("routing_key", self.routing_key.is_some(), &mut out);
                refuses("source", self.source.is_some(), &mut out);
                refuses("resend", self.resend.is_some(), &mut out);
            }
        }
        let mut urls: Vec<(String, &String)> = Vec::new();
        if let Some(list) = &self.urls {
            urls.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, u)| (format!("urls[{i}]"), u)),
            );
        }
        if let Some(u) = &self.url {
            urls.push(("url".into(), u));
        }
        if let Some(u) = &self.runbook {
            urls.push(("runbook".into(), u));
        }
        for (field, u) in urls {
            match url::Url::parse(u) {
                Err(e) => out.push((field, format!("{u:?} is not a URL: {e}"))),
                Ok(parsed) if field == "runbook" => {
                    if !matches!(parsed.scheme(), "https" | "http") {
                        out.push((field, format!("{u:?} must be an http(s) URL")));
                    }
                }
                Ok(parsed) if !url_allowed(&parsed) => out.push((
                    field,
                    format!("{u:?} must be https:// (http:// only to a loopback address)"),
                )),
                Ok(_) => {}
            }
        }
        if self.severities.as_ref().is_some_and(Vec::is_empty) {
            out.push((
                "severities".into(),
                "is empty: this receiver would take nothing (leave it out to take all four)".into(),
            ));
        }
        for (field, value) in [
            ("timeout", &self.timeout),
            ("resend", &self.resend),
            ("failing_after", &self.failing_after),
        ] {
            if let Some(v) = value {
                match super::parse_duration(v) {
                    Some(d) if !d.is_zero() => {}
                    _ => out.push((
                        field.into(),
                        format!("{v:?} is not a duration such as \"30s\", \"5m\" or \"2h\""),
                    )),
                }
            }
        }
        out
    }
}

/// Whether a receiver URL may be used: `https://`, or `http://` to a loopback address only
/// (tests, an Alertmanager on the same host).
pub fn url_allowed(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => super::is_loopback(url),
        _ => false,
    }
}

/// Problems across receivers: two with one name.
pub fn duplicate_names(receivers: &[ReceiverConfig]) -> Vec<(usize, String)> {
    let mut seen = std::collections::BTreeSet::new();
    receivers
        .iter()
        .enumerate()
        .filter(|(_, r)| !seen.insert(r.name.as_str()))
        .map(|(i, r)| {
            (
                i,
                format!("{:?} is already the name of another receiver", r.name),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ReceiverConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn each_kind_names_what_it_needs_and_what_does_not_apply() {
        let r = parse("name = \"pd\"\nkind = \"pagerduty\"\nurls = [\"https://x\"]");
        let p = r.problems();
        assert!(
            p.iter()
                .any(|(f, m)| f == "routing_key" && m.contains("required")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(f, m)| f == "urls" && m.contains("does not apply")),
            "{p:?}"
        );
        let r = parse("name = \"am\"\nkind = \"alertmanager\"\nurls = [\"http://10.0.0.1:9093\"]");
        let p = r.problems();
        assert!(
            p.iter()
                .any(|(f, m)| f == "urls[0]" && m.contains("loopback")),
            "{p:?}"
        );
        let r = parse(
            "name = \"am\"\nkind = \"alertmanager\"\nurls = [\"http://127.0.0.1:9093\"]\nseverities = []\nresend = \"soon\"",
        );
        let p = r.problems();
        assert!(p.iter().any(|(f, _)| f == "severities"), "{p:?}");
        assert!(
            p.iter().any(|(f, m)| f == "resend" && m.contains("soon")),
            "{p:?}"
        );
        let r = parse("name = \"Team Chat\"\nkind = \"slack\"\nwebhook_url = { env = \"X\" }");
        assert_eq!(r.problems().len(), 1, "{:?}", r.problems());
    }

    #[test]
    fn severities_filter_and_default_to_all() {
        let all = parse("name = \"s\"\nkind = \"slack\"\nwebhook_url = { env = \"X\" }");
        assert!(Severity::ALL.iter().all(|s| all.takes(*s)));
        let pd = parse(
            "name = \"p\"\nkind = \"pagerduty\"\nrouting_key = { env = \"X\" }\nseverities = [\"critical\", \"error\"]",
        );
        assert!(pd.problems().is_empty(), "{:?}", pd.problems());
        assert!(pd.takes(Severity::Critical) && !pd.takes(Severity::Warning));
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused_by_name() {
        let e = toml::from_str::<ReceiverConfig>("name = \"x\"\nkind = \"opsgenie\"").unwrap_err();
        assert!(e.to_string().contains("opsgenie"), "{e}");
        let e =
            toml::from_str::<ReceiverConfig>("name = \"x\"\nkind = \"slack\"\nchannel = \"#a\"")
                .unwrap_err();
        assert!(e.to_string().contains("channel"), "{e}");
    }
}
