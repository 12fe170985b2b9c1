//! Microsoft Teams through a Workflows webhook (the "Post to a channel when a webhook request
//! is received" template; the Office 365 connectors it replaces are retired): an Adaptive
//! Card in the message envelope Teams expects.
//!
//! The envelope is `{"type": "message", "attachments": [{"contentType":
//! "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <card>}]}`, the
//! card of version [`CARD_VERSION`]: a coloured headline, a `FactSet` (time left, deadline,
//! state, fingerprint), "What you must do" as text blocks, the facts, a context line and a
//! runbook button. Teams takes at most [`MAX_PAYLOAD`] bytes; longer lists are cut to fit,
//! ending with a line that points to the email. `docs/channels.md` has the shapes, limits and
//! sources.
//!
//! The Workflows URL is the secret (its `sig` parameter is a signature): never in a payload
//! or an error, and every part of it is scrubbed from an answer. Every status is sent.

use std::time::Duration;

use super::{Alert, ChannelError, Severity, Status, cut, post_json};
use crate::secret::Secret;

/// The Adaptive Card schema version sent: the newest that every Teams client and the
/// Workflows "post card" action render (1.5 features are desktop-only).
pub const CARD_VERSION: &str = "1.4";

/// The largest message Teams takes through a webhook: 28 KB.
pub const MAX_PAYLOAD: usize = 28 * 1024;

/// The longest one item of a list, or the headline, is shown, in characters.
const MAX_ITEM: usize = 1000;
/// How much of an answer an error keeps.
const MAX_DETAIL: usize = 300;

/// A configured Teams receiver: a Workflows webhook.
#[derive(Debug)]
pub struct Teams {
    /// The workflow's URL: the secret.
    endpoint: Secret,
    timeout: Duration,
}

impl Teams {
    /// A receiver that posts to the Workflows URL `endpoint` within `timeout`.
    pub fn new(endpoint: Secret, timeout: Duration) -> Teams {
        Teams { endpoint, timeout }
    }

    /// The message for `alert`, within [`MAX_PAYLOAD`] (every status is sent: never `None`).
    pub fn payload(&self, alert: &Alert) -> Option<serde_json::Value> {
        Some(fitted(alert))
    }

    /// Delivers `alert`.
    ///
    /// # Errors
    /// [`ChannelError::Retry`] for 429 (with its `Retry-After`), 5xx, a timeout or a
    /// transport failure; [`ChannelError::Config`] for 401, 403 and 404 (the workflow is
    /// deleted, turned off, or its URL or signature wrong) and a redirect (never followed);
    /// [`ChannelError::Rejected`] for a
    /// card refused (400, 413), naming the workflow's error code.
    pub async fn send(&self, client: &reqwest::Client, alert: &Alert) -> Result<(), ChannelError> {
        let body = fitted(alert);
        let url = self.endpoint.expose();
        let parts = super::slack::url_secret_parts(url);
        let secrets: Vec<&str> = parts.iter().map(String::as_str).collect();
        let answer = post_json(client, url, &body, self.timeout, &secrets).await?;
        let s = answer.status;
        let detail = describe(&answer.body);
        match s {
            200..=299 => Ok(()),
            // Redirects are never followed (a secret would travel on): the URL is stale.
            300..=399 => Err(ChannelError::Config(format!(
                "Teams answered {s}, a redirect, which is not followed: check the URL"
            ))),
            401 | 403 | 404 => Err(ChannelError::Config(format!(
                "Teams refused the webhook ({s}): {detail}; the workflow is deleted, off, or \
                 its URL is wrong: make a new one"
            ))),
            429 | 500..=599 => Err(super::classify("Teams", &answer, &detail)),
            _ => Err(ChannelError::Rejected(format!(
                "Teams refused the card ({s}): {detail}"
            ))),
        }
    }
}

/// The size of `message` as Teams counts it: in UTF-16, two bytes a unit. A webhook reads a
/// body sent without a `charset` as UTF-16 before it applies the limit, so a UTF-8 count
/// would let through a card twice too large.
pub fn size(message: &serde_json::Value) -> usize {
    message.to_string().encode_utf16().count() * 2
}

/// The message for `alert` with as many facts, then to-do items, as fit in [`MAX_PAYLOAD`]
/// (facts go first: the to-do list is what on-call acts on).
fn fitted(alert: &Alert) -> serde_json::Value {
    let (todo, facts) = (alert.todo.len(), alert.facts.len());
    let fits = |t: usize, f: usize| size(&message(alert, t, f)) <= MAX_PAYLOAD;
    let (t, f) = if fits(todo, facts) {
        (todo, facts)
    } else if fits(todo, 0) {
        (todo, largest(facts, |f| fits(todo, f)))
    } else {
        (largest(todo, |t| fits(t, 0)), 0)
    };
    message(alert, t, f)
}

/// The largest `n` in `0..=max` for which `fits(n)` holds, `fits` being monotonic (more
/// items, a larger card); 0 when none does.
fn largest(max: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, max);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The Adaptive Card colour of the headline.
fn colour(alert: &Alert) -> &'static str {
    match (alert.status, alert.severity) {
        (Status::Resolved, _) => "Good",
        (_, Severity::Critical | Severity::Error) => "Attention",
        (_, Severity::Warning) => "Warning",
        (_, Severity::Info) => "Accent",
    }
}

fn text(t: &str) -> serde_json::Value {
    serde_json::json!({ "type": "TextBlock", "text": t, "wrap": true })
}

fn heading(t: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "TextBlock", "text": t, "weight": "Bolder", "spacing": "Medium", "wrap": true,
    })
}

/// The message with the first `todo` to-do items and the first `facts` facts.
fn message(alert: &Alert, todo: usize, facts: usize) -> serde_json::Value {
    let test = if alert.test { "[TEST] " } else { "" };
    let mut body = vec![
        serde_json::json!({
            "type": "TextBlock",
            "text": cut(&format!("{test}{} {}", alert.word, alert.token), 200),
            "size": "Large",
            "weight": "Bolder",
            "color": colour(alert),
            "wrap": true,
        }),
        serde_json::json!({
            "type": "TextBlock",
            "text": cut(&alert.headline, 2 * MAX_ITEM),
            "size": "Medium",
            "color": colour(alert),
            "wrap": true,
        }),
    ];
    let mut fact_set = Vec::new();
    let mut fact = |title: &str, value: &str| {
        fact_set.push(serde_json::json!({ "title": title, "value": cut(value, MAX_ITEM) }));
    };
    if let Some(left) = &alert.left {
        fact("Time left", left);
    }
    if let Some(deadline) = &alert.deadline {
        fact("Deadline", deadline);
    }
    fact("State", &alert.state);
    if let Some(fp) = &alert.fingerprint {
        fact("Fingerprint", fp);
    }
    body.push(serde_json::json!({ "type": "FactSet", "facts": fact_set }));
    let more = |shown: usize, all: usize| {
        text(&format!(
            "…and {} more: the email has them all",
            all - shown
        ))
    };
    if !alert.todo.is_empty() {
        body.push(heading("What you must do"));
        for (i, t) in alert.todo.iter().take(todo).enumerate() {
            body.push(text(&format!("{}. {}", i + 1, cut(t, MAX_ITEM))));
        }
        if todo < alert.todo.len() {
            body.push(more(todo, alert.todo.len()));
        }
    }
    if !alert.facts.is_empty() {
        body.push(heading("Facts"));
        for f in alert.facts.iter().take(facts) {
            body.push(text(&format!("• {}", cut(f, MAX_ITEM))));
        }
        if facts < alert.facts.len() {
            body.push(more(facts, alert.facts.len()));
        }
    }
    if alert.test {
        body.push(serde_json::json!({
            "type": "TextBlock",
            "text": "A test from `tokenwarden notify test`: nothing is wrong.",
            "color": "Accent",
            "weight": "Bolder",
            "wrap": true,
        }));
    }
    body.push(serde_json::json!({
        "type": "TextBlock",
        "text": cut(
            &format!(
                "tokenwarden · {} · {} · since {}",
                alert.condition, alert.alertname, alert.started_at
            ),
            MAX_ITEM,
        ),
        "isSubtle": true,
        "size": "Small",
        "wrap": true,
    }));
    let mut card = serde_json::json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
    });
    if let Some(r) = alert
        .runbook
        .as_deref()
        .filter(|r| r.starts_with("https://") || r.starts_with("http://"))
    {
        card["actions"] =
            serde_json::json!([{ "type": "Action.OpenUrl", "title": "Runbook", "url": r }]);
    }
    serde_json::json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// The workflow's answer in a line: its `error.code` and `error.message`, or the start of a
/// body that is not that JSON. `body` is already scrubbed.
fn describe(body: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |k: &str| err.and_then(|e| e.get(k)).and_then(|v| v.as_str());
    let text = match (field("code"), field("message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) if body.trim().is_empty() => "no details".to_string(),
        (None, None) => body.trim().to_string(),
    };
    cut(&text, MAX_DETAIL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::pagerduty::tests::sample;

    fn card(m: &serde_json::Value) -> &serde_json::Value {
        &m["attachments"][0]["content"]
    }

    #[test]
    fn the_envelope_and_card_are_what_teams_expects() {
        let m = fitted(&sample(Status::Firing, Severity::Critical));
        assert_eq!(m["type"], "message");
        let a = &m["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert!(a["contentUrl"].is_null());
        let c = card(&m);
        assert_eq!(c["type"], "AdaptiveCard");
        assert_eq!(c["version"], CARD_VERSION);
        assert_eq!(
            c["$schema"],
            "http://adaptivecards.io/schemas/adaptive-card.json"
        );
        let b = c["body"].as_array().unwrap();
        assert_eq!(b[0]["text"], "CRITICAL prod");
        assert_eq!(b[0]["color"], "Attention");
        assert_eq!(b[1]["text"], "the token expires in 2 days");
        assert_eq!(b[2]["type"], "FactSet");
        assert_eq!(
            b[2]["facts"],
            serde_json::json!([
                {"title": "Time left", "value": "2 days 3 hours"},
                {"title": "Deadline", "value": "Sun 29 Nov 2026 19:00 UTC"},
                {"title": "State", "value": "CRITICAL"},
                {"title": "Fingerprint", "value": "1a2b3c4d"},
            ])
        );
        assert_eq!(b[3]["text"], "What you must do");
        assert_eq!(b[4]["text"], "1. Stage a new token: tokenwarden stage prod");
        assert_eq!(
            c["actions"][0]["url"],
            "https://runbooks.example/tokenwarden#expiry"
        );
    }

    #[test]
    fn colours_follow_severity_and_recovery() {
        let c = |st, sev| colour(&sample(st, sev));
        assert_eq!(c(Status::Firing, Severity::Error), "Attention");
        assert_eq!(c(Status::Firing, Severity::Warning), "Warning");
        assert_eq!(c(Status::Notice, Severity::Info), "Accent");
        assert_eq!(c(Status::Resolved, Severity::Critical), "Good");
    }

    #[test]
    fn a_test_says_so_plainly() {
        let mut a = sample(Status::Notice, Severity::Info);
        a.test = true;
        let m = Teams::new(Secret::new("https://x.example/w"), Duration::from_secs(1))
            .payload(&a)
            .unwrap();
        let b = card(&m)["body"].as_array().unwrap().clone();
        assert!(b[0]["text"].as_str().unwrap().starts_with("[TEST] "));
        assert!(m.to_string().contains("nothing is wrong"));
    }

    #[test]
    fn long_lists_are_cut_to_fit_the_size_limit_todo_last() {
        let mut a = sample(Status::Firing, Severity::Warning);
        a.headline = "h".repeat(10_000);
        a.todo = (0..200)
            .map(|i| format!("step {i} {}", "s".repeat(200)))
            .collect();
        a.facts = (0..200)
            .map(|i| format!("fact {i} {}", "f".repeat(200)))
            .collect();
        let m = fitted(&a);
        assert!(size(&m) <= MAX_PAYLOAD, "{}", size(&m));
        let all = m.to_string();
        assert!(all.contains("1. step 0"));
        assert!(
            !all.contains("fact 0"),
            "facts go before the to-do list does"
        );
        assert!(all.contains("more: the email has them all"));
        // Every item that fits is kept: one more would not fit.
        let shown = card(&m)["body"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["text"].as_str().is_some_and(|t| t.contains(". step ")))
            .count();
        assert!(shown > 10);
        assert!(size(&message(&a, shown + 1, 0)) > MAX_PAYLOAD);
    }

    #[test]
    fn largest_finds_the_edge() {
        assert_eq!(largest(200, |n| n <= 57), 57);
        assert_eq!(largest(200, |_| true), 200);
        assert_eq!(largest(200, |_| false), 0);
        assert_eq!(largest(0, |_| true), 0);
    }

    #[test]
    fn size_counts_as_teams_does() {
        let v = serde_json::json!("ab");
        assert_eq!(size(&v), 8); // "\"ab\"" in UTF-16
        assert_eq!(size(&serde_json::json!("é")), 6);
    }

    #[test]
    fn describe_names_the_workflows_error() {
        assert_eq!(
            describe(r#"{"error":{"code":"TriggerInputSchemaMismatch","message":"bad"}}"#),
            "TriggerInputSchemaMismatch: bad"
        );
        assert_eq!(describe(""), "no details");
        assert_eq!(describe("oops"), "oops");
    }
}
