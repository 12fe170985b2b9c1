//! Slack incoming webhooks: a Block Kit message whose first screen is the severity, the
//! token, the headline, time left and the deadline, then what to do.
//!
//! Shapes and limits are Slack's Block Kit reference and "Sending messages using incoming
//! webhooks" (`docs/channels.md` has the table and the sources): at most 50 blocks; a
//! `header` of `plain_text` up to 150 characters; a `section`'s text up to 3000 characters,
//! or up to 10 `fields` of up to 2000 each; a `context` of up to 10 elements. The top-level
//! `text` is what notifications and screen readers show, so it carries the summary line.
//! Slack answers 200 `ok`, or a status with one error word (`invalid_blocks`, `no_service`,
//! `channel_is_archived`, ...) as the body.
//!
//! The webhook URL is the secret: it is never in a payload or an error, and Slack's answer is
//! scrubbed of it, whole and in parts (its path, its token), before it becomes an error.
//! Every status is sent, a notice and a recovery too: chat is where news is read.

use std::time::Duration;

use super::{Alert, ChannelError, Severity, Status, cut, post_json};
use crate::secret::Secret;

/// The most blocks a message may have.
pub const MAX_BLOCKS: usize = 50;
/// The longest `header` text, in characters.
pub const MAX_HEADER: usize = 150;
/// The longest text of a `section` (or of a `context` element), in characters.
pub const MAX_SECTION_TEXT: usize = 3000;
/// The most `fields` of a `section`.
pub const MAX_FIELDS: usize = 10;
/// The longest text of one field, in characters.
pub const MAX_FIELD_TEXT: usize = 2000;
/// The most elements of a `context` block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;

/// The most sections "What you must do" takes (a list longer than fits is ended by a line
/// pointing to the email, which has all of it).
const TODO_SECTIONS: usize = 5;
/// The most sections the facts take.
const FACT_SECTIONS: usize = 2;
/// The longest one item of a list is shown, in characters.
const MAX_ITEM: usize = 1000;
/// Room kept in each packed section for the "…and N more" line.
const MORE_ROOM: usize = 60;
/// How much of an answer that is not one of Slack's words an error keeps.
const MAX_DETAIL: usize = 200;

/// Error words that mean the webhook or its channel is gone or closed to it: fixing the
/// config (a new webhook URL) is the only way forward, whatever the status carrying them.
const CONFIG_WORDS: &[&str] = &[
    "no_service",
    "no_service_id",
    "no_active_hooks",
    "no_team",
    "team_disabled",
    "invalid_token",
    "channel_not_found",
    "channel_is_archived",
    "action_prohibited",
    "posting_to_general_channel_denied",
    "user_not_found",
];

/// A configured Slack receiver: an incoming webhook.
#[derive(Debug)]
pub struct Slack {
    /// The webhook URL: the secret.
    endpoint: Secret,
    timeout: Duration,
}

impl Slack {
    /// A receiver that posts to the webhook URL `endpoint` within `timeout`.
    pub fn new(endpoint: Secret, timeout: Duration) -> Slack {
        Slack { endpoint, timeout }
    }

    /// The Block Kit message for `alert` (every status is sent: never `None`).
    pub fn payload(&self, alert: &Alert) -> Option<serde_json::Value> {
        Some(message(alert))
    }

    /// Delivers `alert`.
    ///
    /// # Errors
    /// [`ChannelError::Retry`] for 429 (with Slack's `Retry-After`), 5xx, a timeout or a
    /// transport failure; [`ChannelError::Config`] for a webhook or channel that is gone,
    /// archived or closed (401, 403, 404, 410, or one of those words) and for a redirect
    /// (never followed); and
    /// [`ChannelError::Rejected`] for a message Slack refused (`invalid_payload`,
    /// `invalid_blocks`, ...), naming Slack's word.
    pub async fn send(&self, client: &reqwest::Client, alert: &Alert) -> Result<(), ChannelError> {
        let body = message(alert);
        let url = self.endpoint.expose();
        let parts = url_secret_parts(url);
        let secrets: Vec<&str> = parts.iter().map(String::as_str).collect();
        let answer = post_json(client, url, &body, self.timeout, &secrets).await?;
        let s = answer.status;
        let word = error_word(&answer.body);
        let detail = word.map_or_else(|| cut(answer.body.trim(), MAX_DETAIL), str::to_string);
        match s {
            200..=299 => Ok(()),
            // Redirects are never followed (a secret would travel on): the URL is stale.
            300..=399 => Err(ChannelError::Config(format!(
                "Slack answered {s}, a redirect, which is not followed: check the URL"
            ))),
            429 | 500..=599 => Err(super::classify("Slack", &answer, &detail)),
            _ if matches!(s, 401 | 403 | 404 | 410)
                || word.is_some_and(|w| CONFIG_WORDS.contains(&w)) =>
            {
                Err(ChannelError::Config(format!(
                    "Slack refused the webhook ({s} {detail}): it, or its channel, is gone or \
                     closed to it; make a new webhook URL"
                )))
            }
            _ => Err(ChannelError::Rejected(format!(
                "Slack refused the message ({s} {detail})"
            ))),
        }
    }
}

/// Slack's error word when the answer is one (`invalid_blocks`), else `None`.
fn error_word(body: &str) -> Option<&str> {
    let w = body.trim();
    (!w.is_empty()
        && w.len() <= 64
        && w.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then_some(w)
}

/// The parts of a webhook URL that are secret on their own, for scrubbing an answer that
/// echoes only some of it (an error page naming the path, a log of the query): the URL, its
/// path and query, each path segment and query value long enough to be a token or a
/// signature. Short words (`services`, `triggers`) are not secret and are left alone.
pub(crate) fn url_secret_parts(url: &str) -> Vec<String> {
    let mut parts = vec![url.to_string()];
    if let Ok(u) = reqwest::Url::parse(url) {
        parts.push(u.path().to_string());
        if let Some(q) = u.query() {
            parts.push(q.to_string());
            parts.push(format!("{}?{q}", u.path()));
        }
        parts.extend(
            u.path_segments()
                .into_iter()
                .flatten()
                .filter(|s| s.len() >= 16)
                .map(str::to_string),
        );
        parts.extend(
            u.query_pairs()
                .map(|(_, v)| v.into_owned())
                .filter(|v| v.len() >= 16),
        );
    }
    parts
}

/// The message: header, headline, the facts that decide urgency as fields, what to do, the
/// facts, and a context line.
fn message(alert: &Alert) -> serde_json::Value {
    let test = if alert.test { "[TEST] " } else { "" };
    let mut blocks = vec![serde_json::json!({
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": cut(
                &format!("{} {test}{} {}", emoji(alert), alert.word, alert.token),
                MAX_HEADER,
            ),
            "emoji": true,
        },
    })];
    // Slack refuses an empty section text.
    if !alert.headline.trim().is_empty() {
        blocks.push(section(&mrkdwn(&alert.headline, MAX_SECTION_TEXT)));
    }
    let mut fields = Vec::new();
    let mut field = |name: &str, value: &str| {
        fields.push(serde_json::json!({
            "type": "mrkdwn",
            "text": format!("*{name}*\n{}", mrkdwn(value, MAX_FIELD_TEXT - name.len() - 3)),
        }));
    };
    if let Some(left) = &alert.left {
        field("Time left", left);
    }
    if let Some(deadline) = &alert.deadline {
        field("Deadline", deadline);
    }
    field("State", &alert.state);
    if let Some(fp) = &alert.fingerprint {
        field("Fingerprint", fp);
    }
    fields.truncate(MAX_FIELDS);
    blocks.push(serde_json::json!({ "type": "section", "fields": fields }));
    let numbered: Vec<String> = alert
        .todo
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}. {}", i + 1, mrkdwn(t, MAX_ITEM)))
        .collect();
    for text in pack("*What you must do*", &numbered, TODO_SECTIONS) {
        blocks.push(section(&text));
    }
    let bullets: Vec<String> = alert
        .facts
        .iter()
        .map(|f| format!("• {}", mrkdwn(f, MAX_ITEM)))
        .collect();
    for text in pack("*Facts*", &bullets, FACT_SECTIONS) {
        blocks.push(section(&text));
    }
    let mut context = vec![format!(
        "tokenwarden · {} · {} · since {}",
        mrkdwn(&alert.condition, 200),
        mrkdwn(&alert.alertname, 200),
        alert.started_at
    )];
    if let Some(r) = alert.runbook.as_deref().filter(|r| link_safe(r)) {
        context.push(format!("<{r}|Runbook>"));
    }
    if alert.test {
        context.push("A test from `tokenwarden notify test`: nothing is wrong.".to_string());
    }
    context.truncate(MAX_CONTEXT_ELEMENTS);
    blocks.push(serde_json::json!({
        "type": "context",
        "elements": context
            .iter()
            .map(|t| serde_json::json!({ "type": "mrkdwn", "text": cut(t, MAX_SECTION_TEXT) }))
            .collect::<Vec<_>>(),
    }));
    blocks.truncate(MAX_BLOCKS);
    serde_json::json!({
        // Read as mrkdwn too (notifications show it), so escaped like the blocks.
        "text": mrkdwn(&alert.summary(), MAX_SECTION_TEXT),
        "blocks": blocks,
    })
}

/// The header's emoji: the colour Block Kit has no other way to show.
fn emoji(alert: &Alert) -> &'static str {
    match (alert.status, alert.severity) {
        (Status::Resolved, _) => ":white_check_mark:",
        (_, Severity::Critical) => ":rotating_light:",
        (_, Severity::Error) => ":red_circle:",
        (_, Severity::Warning) => ":warning:",
        (_, Severity::Info) => ":information_source:",
    }
}

fn section(text: &str) -> serde_json::Value {
    serde_json::json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// `lines` under `title`, packed into at most `max_sections` texts of at most
/// [`MAX_SECTION_TEXT`] characters each; lines that do not fit are counted in a last
/// "…and N more" line. No text when there are no lines.
fn pack(title: &str, lines: &[String], max_sections: usize) -> Vec<String> {
    let room = MAX_SECTION_TEXT - MORE_ROOM;
    let mut out = Vec::new();
    let mut current = title.to_string();
    let mut shown = 0;
    for line in lines {
        let line = cut(line, room - title.chars().count() - 1);
        if current.chars().count() + 1 + line.chars().count() > room {
            if out.len() + 1 == max_sections {
                break;
            }
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
        shown += 1;
    }
    if shown == 0 {
        return Vec::new();
    }
    if shown < lines.len() {
        current.push_str(&format!(
            "\n…and {} more: the email has them all",
            lines.len() - shown
        ));
    }
    out.push(current);
    out
}

/// `raw` escaped for Slack's mrkdwn (`&`, `<`, `>` are its control characters) and cut to
/// `max` characters without splitting an escape.
fn mrkdwn(raw: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    let total: usize = raw.chars().map(|c| escaped(c).chars().count()).sum();
    let limit = if total <= max {
        max
    } else {
        max.saturating_sub(1)
    };
    for c in raw.chars() {
        let e = escaped(c);
        let len = e.chars().count();
        if n + len > limit {
            out.push('…');
            break;
        }
        out.push_str(&e);
        n += len;
    }
    out
}

fn escaped(c: char) -> String {
    match c {
        '&' => "&amp;".into(),
        '<' => "&lt;".into(),
        '>' => "&gt;".into(),
        c => c.to_string(),
    }
}

/// Whether `url` can be put in a `<url|text>` link: http(s), and none of the characters
/// that would end the link early.
fn link_safe(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '<' | '>' | '|'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::pagerduty::tests::sample;

    fn texts(v: &serde_json::Value) -> String {
        v.to_string()
    }

    #[test]
    fn the_first_blocks_are_severity_token_headline_and_the_deadline() {
        let m = message(&sample(Status::Firing, Severity::Critical));
        assert_eq!(m["text"], "CRITICAL prod: the token expires in 2 days");
        let b = m["blocks"].as_array().unwrap();
        assert_eq!(b[0]["type"], "header");
        assert_eq!(b[0]["text"]["type"], "plain_text");
        assert_eq!(b[0]["text"]["text"], ":rotating_light: CRITICAL prod");
        assert_eq!(b[1]["text"]["text"], "the token expires in 2 days");
        let fields: Vec<&str> = b[2]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "*Time left*\n2 days 3 hours",
                "*Deadline*\nSun 29 Nov 2026 19:00 UTC",
                "*State*\nCRITICAL",
                "*Fingerprint*\n1a2b3c4d"
            ]
        );
        assert_eq!(
            b[3]["text"]["text"],
            "*What you must do*\n1. Stage a new token: tokenwarden stage prod\n2. Check that the rotation ran: tokenwarden status"
        );
        assert_eq!(b.last().unwrap()["type"], "context");
        assert!(texts(&m).contains("<https://runbooks.example/tokenwarden#expiry|Runbook>"));
    }

    #[test]
    fn recovery_notice_and_test_are_sent_and_say_what_they_are() {
        let mut r = sample(Status::Resolved, Severity::Critical);
        r.word = "RESOLVED".into();
        let m = Slack::new(
            Secret::new("https://hooks.example/x"),
            Duration::from_secs(1),
        )
        .payload(&r)
        .unwrap();
        assert_eq!(
            m["blocks"][0]["text"]["text"],
            ":white_check_mark: RESOLVED prod"
        );
        let n = message(&sample(Status::Notice, Severity::Info));
        assert!(
            n["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .starts_with(":information_source:")
        );
        let mut t = sample(Status::Notice, Severity::Info);
        t.test = true;
        let m = message(&t);
        assert!(m["text"].as_str().unwrap().starts_with("[TEST] "));
        assert!(
            m["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("[TEST]")
        );
        assert!(texts(&m).contains("nothing is wrong"));
    }

    #[test]
    fn long_texts_and_lists_stay_within_block_kit_limits() {
        let mut a = sample(Status::Firing, Severity::Warning);
        a.token = "t".repeat(300);
        a.headline = "h<&>".repeat(2000);
        a.left = Some("l".repeat(5000));
        a.todo = (0..200)
            .map(|i| format!("step {i} {}", "s".repeat(100)))
            .collect();
        a.facts = (0..200)
            .map(|i| format!("fact {i} {}", "f".repeat(3000)))
            .collect();
        let m = message(&a);
        let b = m["blocks"].as_array().unwrap();
        assert!(b.len() <= MAX_BLOCKS);
        assert!(b[0]["text"]["text"].as_str().unwrap().chars().count() <= MAX_HEADER);
        for block in b {
            if let Some(t) = block["text"]["text"].as_str() {
                assert!(t.chars().count() <= MAX_SECTION_TEXT, "{}", t.len());
            }
            for f in block["fields"].as_array().into_iter().flatten() {
                assert!(f["text"].as_str().unwrap().chars().count() <= MAX_FIELD_TEXT);
            }
        }
        let all = texts(&m);
        assert!(all.contains("1. step 0"));
        assert!(all.contains("more: the email has them all"));
        assert!(
            !all.contains("h<&>"),
            "mrkdwn control characters are escaped"
        );
        assert!(all.contains("h&lt;&amp;&gt;"));
    }

    #[test]
    fn an_empty_headline_makes_no_empty_section() {
        let mut a = sample(Status::Firing, Severity::Critical);
        a.headline = " ".into();
        a.todo.clear();
        a.facts.clear();
        let m = message(&a);
        for b in m["blocks"].as_array().unwrap() {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(!t.trim().is_empty(), "{b}");
            }
        }
        assert!(!m.to_string().contains("What you must do"));
    }

    #[test]
    fn mrkdwn_escapes_and_never_splits_an_escape() {
        assert_eq!(mrkdwn("a<b>&c", 100), "a&lt;b&gt;&amp;c");
        assert_eq!(mrkdwn("abc&def", 6), "abc…");
        assert_eq!(mrkdwn("abcdef", 6), "abcdef");
    }

    #[test]
    fn error_words_are_slacks_words_only() {
        assert_eq!(error_word("invalid_blocks\n"), Some("invalid_blocks"));
        assert_eq!(error_word("<html>oops</html>"), None);
        assert_eq!(error_word(""), None);
    }

    #[test]
    fn secret_parts_of_a_webhook_url_cover_the_token_and_the_signature() {
        let p = url_secret_parts(
            "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX",
        );
        assert!(p.contains(&"XXXXXXXXXXXXXXXXXXXXXXXX".to_string()));
        assert!(p.contains(&"/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX".to_string()));
        assert!(!p.contains(&"services".to_string()));
        let p = url_secret_parts(
            "https://x.logic.azure.com/workflows/0123456789abcdef0123/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SIGSIGSIGSIGSIGSIGSIG",
        );
        assert!(p.contains(&"SIGSIGSIGSIGSIGSIGSIG".to_string()));
        assert!(p.contains(&"0123456789abcdef0123".to_string()));
    }

    #[test]
    fn only_plain_links_are_linked() {
        assert!(link_safe("https://wiki.example/run#a"));
        assert!(!link_safe("https://x|evil"));
        assert!(!link_safe("javascript:alert(1)"));
    }
}
