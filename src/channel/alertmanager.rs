//! Alertmanager's `/api/v2/alerts`: one alert per token and condition, re-sent while it lasts.
//!
//! Source: Alertmanager's OpenAPI document (`api/v2/openapi.yaml` in prometheus/alertmanager,
//! v0.25 as Debian 12 ships it) and Prometheus's client behaviour: `POST /api/v2/alerts` with a
//! JSON array of `postableAlert` (`labels` required, `annotations`, `startsAt`, `endsAt`,
//! `generatorURL`); 200 on success, 400 with a JSON string naming what is wrong.
//!
//! - **Identity is the label set**: `alertname`, `token`, `severity`, `state`. When a
//!   condition escalates (a warning becomes critical) the labels change, so the hub resolves
//!   the old label set as it fires the new one (`hub.rs`).
//! - **Re-sent while active**, as Prometheus does: every `resend` interval (1 min by default)
//!   each open alert is posted again with `endsAt` four intervals ahead. Alertmanager keeps an
//!   alert active until its `endsAt` (its own `resolve_timeout` applies only to alerts sent
//!   without one), so a tokenwarden that stops lets its alerts end after four intervals rather
//!   than leave them firing forever.
//! - **Resolved** is the same labels with `endsAt` at the resolution time; it is re-sent with
//!   the others for a while ([`RESOLVED_RESEND`]) so an HA replica that missed it hears it.
//! - **An HA pair**: every URL gets every post. A post counts as delivered when at least one
//!   replica accepted it (the next re-send reaches the others); only when none did is it
//!   retried through the queue.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Alert, ChannelError, Status};

/// How many re-send intervals ahead an active alert's `endsAt` is set (Prometheus uses four).
pub const ENDS_AFTER_RESENDS: u32 = 4;

/// How long a resolved alert keeps being re-sent (with its `endsAt`) after its resolution.
pub const RESOLVED_RESEND: Duration = Duration::from_secs(15 * 60);

/// A configured Alertmanager receiver: one or more base URLs.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    urls: Vec<String>,
    timeout: Duration,
    resend: Duration,
}

impl Alertmanager {
    /// A receiver posting to every one of `urls` (base URLs such as `http://127.0.0.1:9093`)
    /// within `timeout` each, re-sending active alerts every `resend`.
    pub fn new(urls: Vec<String>, timeout: Duration, resend: Duration) -> Alertmanager {
        Alertmanager {
            urls,
            timeout,
            resend,
        }
    }

    /// The re-send interval.
    pub fn resend(&self) -> Duration {
        self.resend
    }

    /// The labels that make the alert's identity in Alertmanager.
    pub fn labels(alert: &Alert) -> Value {
        json!({
            "alertname": alert.alertname,
            "token": alert.token,
            "severity": alert.severity.word(),
            "state": alert.state,
        })
    }

    /// One `postableAlert`; `None` for one-off news (Alertmanager is for conditions).
    pub fn item(&self, alert: &Alert, now: Timestamp) -> Option<Value> {
        let ends = match alert.status {
            Status::Notice => return None,
            Status::Resolved => now,
            Status::Firing => {
                let ahead = self.resend.saturating_mul(ENDS_AFTER_RESENDS);
                now.checked_add(jiff::SignedDuration::try_from(ahead).ok()?)
                    .unwrap_or(now)
            }
        };
        let mut description = alert.headline.clone();
        if let Some(d) = &alert.deadline {
            description.push_str(&format!(". Deadline: {d}"));
        }
        if let Some(l) = &alert.left {
            description.push_str(&format!(". Time left: {l}"));
        }
        if !alert.todo.is_empty() {
            description.push_str(". What you must do: ");
            let steps: Vec<String> = alert
                .todo
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{}. {t}", i + 1))
                .collect();
            description.push_str(&steps.join(" "));
        }
        let mut annotations = json!({
            "summary": super::cut(&alert.summary(), 1024),
            "description": super::cut(&description, 8192),
        });
        let extra = [
            ("runbook_url", alert.runbook.clone()),
            ("fingerprint", alert.fingerprint.clone()),
            ("deadline", alert.deadline_at.map(|t| t.to_string())),
            ("time_left", alert.left.clone()),
        ];
        for (k, v) in extra {
            if let Some(v) = v {
                annotations[k] = Value::String(v);
            }
        }
        Some(json!({
            "labels": Self::labels(alert),
            "annotations": annotations,
            "startsAt": alert.started_at.to_string(),
            "endsAt": ends.to_string(),
        }))
    }

    /// Posts `alerts` (as of `now`) to every URL. Delivered when at least one accepted them.
    ///
    /// # Errors
    /// When none accepted: the error of the first, named by what the queue does next (400:
    /// [`ChannelError::Rejected`] with Alertmanager's words).
    pub async fn send(
        &self,
        client: &reqwest::Client,
        alerts: &[Alert],
        now: Timestamp,
    ) -> Result<(), ChannelError> {
        let items: Vec<Value> = alerts.iter().filter_map(|a| self.item(a, now)).collect();
        if items.is_empty() {
            return Ok(());
        }
        let body = Value::Array(items);
        let mut first_error = None;
        let mut accepted = 0;
        for base in &self.urls {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            let result = match super::post_json(client, &url, &body, self.timeout, &[]).await {
                Ok(a) if (200..300).contains(&a.status) => Ok(()),
                Ok(a) => Err(super::classify(
                    &format!("Alertmanager {base}"),
                    &a,
                    a.body.trim(),
                )),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => accepted += 1,
                Err(e) => {
                    tracing::warn!(alertmanager = %base, error = %e, "Alertmanager did not take the alerts");
                    first_error.get_or_insert(e);
                }
            }
        }
        match (accepted, first_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Severity;

    fn alert(status: Status) -> Alert {
        Alert {
            id: "prod-abcd-critical".into(),
            key: "tokenwarden/prod/expiry".into(),
            token: "prod".into(),
            condition: "expiry".into(),
            alertname: "TokenwardenTokenExpiry".into(),
            severity: Severity::Critical,
            status,
            state: "CRITICAL".into(),
            word: "CRITICAL".into(),
            headline: "expires in 2 days".into(),
            left: Some("2 days".into()),
            deadline: Some("2026-12-01 10:00 UTC".into()),
            deadline_at: Some("2026-12-01T10:00:00Z".parse().unwrap()),
            todo: vec!["Rotate it now.".into()],
            facts: vec![],
            fingerprint: Some("fp:1a2b3c4d".into()),
            runbook: Some("https://wiki.example.com/tokenwarden".into()),
            started_at: "2026-11-27T10:00:00Z".parse().unwrap(),
            test: false,
        }
    }

    #[test]
    fn firing_ends_four_resends_ahead_resolved_ends_now_notices_are_skipped() {
        let am = Alertmanager::new(vec![], Duration::from_secs(5), Duration::from_secs(60));
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let f = am.item(&alert(Status::Firing), now).unwrap();
        assert_eq!(f["endsAt"], "2026-11-27T12:04:00Z");
        assert_eq!(f["startsAt"], "2026-11-27T10:00:00Z");
        assert_eq!(f["labels"]["severity"], "critical");
        assert_eq!(
            f["annotations"]["runbook_url"],
            "https://wiki.example.com/tokenwarden"
        );
        let r = am.item(&alert(Status::Resolved), now).unwrap();
        assert_eq!(r["endsAt"], "2026-11-27T12:00:00Z");
        assert_eq!(r["labels"], f["labels"]);
        assert!(am.item(&alert(Status::Notice), now).is_none());
    }
}
