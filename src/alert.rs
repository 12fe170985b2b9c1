//! The words of on-call email: subject, facts, what tokenwarden does next, what a person must
//! do and by when. Pure: everything comes in as arguments, including `now`.
//!
//! One [`Doc`] is rendered twice, as plain text and as HTML, so the two parts never disagree.
//! Nothing here can see a token: only its fingerprint and the facts `debug_token` gave.

use std::time::Duration;

use jiff::Timestamp;

use crate::policy::{Binding, Condition, Effective, Notice, Policy, State, TokenFacts, Verdict};
use crate::secret::Fingerprint;
use crate::timefmt;

/// Everything an email may mention about one token.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The token's name.
    pub token: &'a str,
    /// The token's kind: its words (where to log in again, the dashboard) join "what you must do".
    pub kind: crate::meta::kind::Kind,
    /// Configured WABA id.
    pub waba_id: Option<&'a str>,
    /// Configured phone-number id.
    pub phone_number_id: Option<&'a str>,
    /// Where the token lives, in words.
    pub store: &'a str,
    /// The command that puts a new token where tokenwarden reads it.
    pub store_hint: &'a str,
    /// Last known facts.
    pub facts: Option<&'a TokenFacts>,
    /// The latest verdict.
    pub verdict: &'a Verdict,
    /// The current state.
    pub state: State,
    /// The effective expiry.
    pub effective: Option<Effective>,
    /// The token's policy.
    pub policy: &'a Policy,
    /// When tokenwarden checks next.
    pub next_check: Option<Timestamp>,
    /// When the current streak of failed checks began.
    pub failing_since: Option<Timestamp>,
    /// What tokenwarden does about an ageing or broken token on its own (the configured
    /// rotation source), as a sentence.
    pub rotation: &'a str,
    /// When a rotation of the token becomes due (for the picture of its life), if ever.
    pub rotation_due: Option<Timestamp>,
}

/// A rendered email, before addressing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line.
    pub subject: String,
    /// text/plain.
    pub text: String,
    /// text/html.
    pub html: String,
    /// The first screen and the lists as fields, for the channels beside email.
    pub summary: Summary,
}

/// What an email's first screen says, and its lists, as fields: what a chat message or a page
/// carries (never a token; tokens appear by fingerprint only, as in the email).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The subject's word in capitals (`WARNING`, `ROTATED`).
    pub word: String,
    /// The headline, without the token's name.
    pub headline: String,
    /// The time left, in words.
    pub left: Option<String>,
    /// The deadline, in words.
    pub deadline: Option<String>,
    /// When the deadline falls, when known.
    pub deadline_at: Option<Timestamp>,
    /// "What you must do", in order.
    pub todo: Vec<String>,
    /// The facts.
    pub facts: Vec<String>,
}

struct Section {
    title: String,
    items: Vec<String>,
    ordered: bool,
}

/// What the first screen of an email says, before anything else: on-call reads the top, so
/// the severity, the token, the time left and the deadline come first.
struct Head {
    /// The subject's word in capitals (`WARNING`, `ROTATED`); it picks the banner's colour.
    word: String,
    /// The token the email is about (`None`: a host alert, about tokenwarden's own files).
    token: Option<String>,
    /// The subject's headline.
    headline: String,
    /// The time left, in words (`None`: the email is not about a deadline).
    left: Option<String>,
    /// The deadline, in words.
    deadline: Option<String>,
    /// The token's life as a small picture, when its points are known.
    life: Option<Life>,
}

/// The points of a token's life the picture shows.
#[derive(Debug, Clone, Copy)]
struct Life {
    issued: Option<Timestamp>,
    now: Timestamp,
    due: Option<Timestamp>,
    deadline: Option<Timestamp>,
}

/// A small document rendered to text and HTML.
struct Doc {
    head: Head,
    lead: String,
    sections: Vec<Section>,
}

/// The banner's colour for a subject word: red when messaging fails or is about to, amber when
/// someone should look, green when all is well. White text on each passes WCAG AA contrast.
fn colour(word: &str) -> &'static str {
    match word {
        "CRITICAL" | "EXPIRED" | "INVALID" | "ROTATION FAILED" | "DELIVERY FAILED"
        | "TARGET FAILING" => "#b3261e",
        "ROTATED" | "RESOLVED" | "EXTENDED" | "UNCHANGED" => "#1e7b34",
        "WARNING"
        | "CONFIG"
        | "UNKNOWN"
        | "DRIFT"
        | "OLD TOKEN STILL IN USE"
        | "ROTATION REJECTED" => "#a15c00",
        _ => "#44546a",
    }
}

/// Section order on the page: what the person must do first, then what tokenwarden does,
/// then the facts (stable for the rest).
fn rank(title: &str) -> u8 {
    if title.starts_with("What you must do") {
        0
    } else if title.starts_with("What tokenwarden will do") {
        1
    } else {
        2
    }
}

impl Doc {
    /// The email with `subject`, and its summary for the other channels.
    fn finish(self, subject: String) -> Rendered {
        let items = |prefix: &str| -> Vec<String> {
            self.sections
                .iter()
                .filter(|s| s.title.starts_with(prefix))
                .flat_map(|s| s.items.iter().cloned())
                .collect()
        };
        let summary = Summary {
            word: self.head.word.clone(),
            headline: self.head.headline.clone(),
            left: self.head.left.clone(),
            deadline: self.head.deadline.clone(),
            deadline_at: self.head.life.and_then(|l| l.deadline),
            todo: items("What you must do"),
            facts: items("Facts"),
        };
        Rendered {
            subject,
            text: self.text(),
            html: self.html(),
            summary,
        }
    }

    fn section(&mut self, title: impl Into<String>, items: Vec<String>, ordered: bool) {
        if !items.is_empty() {
            self.sections.push(Section {
                title: title.into(),
                items,
                ordered,
            });
        }
    }

    fn ordered_sections(&self) -> Vec<&Section> {
        let mut s: Vec<&Section> = self.sections.iter().collect();
        s.sort_by_key(|s| rank(&s.title));
        s
    }

    fn text(&self) -> String {
        let h = &self.head;
        let mut out = match &h.token {
            Some(t) => format!("{} {t}: {}\n", h.word, h.headline),
            None => format!("{}: {}\n", h.word, h.headline),
        };
        if let Some(l) = &h.left {
            out.push_str(&format!("Time left: {l}\n"));
        }
        if let Some(d) = &h.deadline {
            out.push_str(&format!("Deadline:  {d}\n"));
        }
        out.push_str(&format!("\n{}\n", self.lead));
        let mut life_done = false;
        for s in self.ordered_sections() {
            if rank(&s.title) == 2 && !life_done {
                out.push_str(&self.life_text());
                life_done = true;
            }
            out.push_str(&format!("\n{}\n", s.title));
            for (i, item) in s.items.iter().enumerate() {
                let bullet = if s.ordered {
                    format!("{}.", i + 1)
                } else {
                    "-".into()
                };
                out.push_str(&format!("  {bullet} {item}\n"));
            }
        }
        if !life_done {
            out.push_str(&self.life_text());
        }
        out.push_str("\n-- \ntokenwarden: keeps WhatsApp Cloud API tokens alive. `tokenwarden status` shows every token.\n");
        out
    }

    /// The token's life in the text part: its points in time order, one a line.
    fn life_text(&self) -> String {
        let Some(life) = &self.head.life else {
            return String::new();
        };
        let mut out = String::from("\nThe token's life\n");
        for (_, label, at) in life.points() {
            out.push_str(&format!("  {label:<14} {}\n", timefmt::utc(at)));
        }
        out
    }

    /// Mail-safe HTML: tables and inline styles only (no classes, images, scripts or external
    /// resources), as Gmail, Outlook and Apple Mail all render them. The ids only let the
    /// rendering test find the headline and the deadline; mail clients ignore them.
    fn html(&self) -> String {
        let h = &self.head;
        let c = colour(&h.word);
        let mut out = String::from(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"></head>\
             <body style=\"margin:0;padding:0;font-family:Arial,Helvetica,sans-serif;color:#222222;font-size:14px;line-height:1.4\">\
             <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"max-width:680px;border-collapse:collapse\">",
        );
        let token = h
            .token
            .as_ref()
            .map(|t| format!(" &middot; {}", escape(t)))
            .unwrap_or_default();
        out.push_str(&format!(
            "<tr><td id=\"tw-headline\" bgcolor=\"{c}\" style=\"background-color:{c};color:#ffffff;padding:12px 16px\">\
             <div style=\"font-size:20px;font-weight:bold\">{}{token}</div>\
             <div style=\"font-size:16px\">{}</div></td></tr>",
            escape(&h.word),
            escape(&h.headline)
        ));
        if h.left.is_some() || h.deadline.is_some() {
            out.push_str("<tr><td style=\"padding:8px 16px 0 16px\"><table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;font-size:15px\">");
            if let Some(l) = &h.left {
                out.push_str(&format!(
                    "<tr><td style=\"padding:2px 12px 2px 0;color:#555555\">Time left</td><td style=\"padding:2px 0;font-weight:bold;color:{c}\">{}</td></tr>",
                    escape(l)
                ));
            }
            if let Some(d) = &h.deadline {
                out.push_str(&format!(
                    "<tr id=\"tw-deadline\"><td style=\"padding:2px 12px 2px 0;color:#555555\">Deadline</td><td style=\"padding:2px 0;font-weight:bold\">{}</td></tr>",
                    code_spans(&escape(d))
                ));
            }
            out.push_str("</table></td></tr>");
        }
        out.push_str(&format!(
            "<tr><td style=\"padding:8px 16px 0 16px\"><p style=\"margin:0\"><strong>{}</strong></p></td></tr>",
            escape(&self.lead)
        ));
        let mut life_done = false;
        for s in self.ordered_sections() {
            if rank(&s.title) == 2 && !life_done {
                out.push_str(&self.life_html());
                life_done = true;
            }
            let tag = if s.ordered { "ol" } else { "ul" };
            out.push_str(&format!(
                "<tr><td style=\"padding:0 16px\"><h3 style=\"margin:14px 0 4px 0;font-size:16px\">{}</h3><{tag}>",
                escape(&s.title)
            ));
            for item in &s.items {
                out.push_str(&format!("<li>{}</li>", code_spans(&escape(item))));
            }
            out.push_str(&format!("</{tag}></td></tr>"));
        }
        if !life_done {
            out.push_str(&self.life_html());
        }
        out.push_str("<tr><td style=\"padding:8px 16px 16px 16px\"><p style=\"color:#666666;margin:0\">tokenwarden: keeps WhatsApp Cloud API tokens alive. <code>tokenwarden status</code> shows every token.</p></td></tr></table></body></html>");
        out
    }

    /// The token's life as one row of table cells, each as wide as its share of the time, in
    /// the colour of its zone (green before the rotation is due, amber until the deadline,
    /// red after it), pale where it has passed; a row of marks above shows where each point
    /// falls, and a legend below gives each point's date.
    fn life_html(&self) -> String {
        let Some(life) = &self.head.life else {
            return String::new();
        };
        let points = life.points();
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            return String::new();
        };
        let span = (last.2.as_second() - first.2.as_second()).max(1);
        let (mut marks, mut bar) = (String::new(), String::new());
        let segments: Vec<_> = points
            .windows(2)
            .filter(|w| w[1].2 > w[0].2)
            .map(|w| (w[0], w[1]))
            .collect();
        for (n, (from, to)) in segments.iter().enumerate() {
            let (a, b) = (from.2.as_second(), to.2.as_second());
            let pct = (((b - a) * 100) / span).max(1);
            let past = b <= life.now.as_second();
            let fill = if life.deadline.is_some_and(|d| a >= d.as_second()) {
                if past { "#e8a09b" } else { "#b3261e" }
            } else if life.due.is_some_and(|d| a >= d.as_second()) {
                if past { "#f3d48a" } else { "#e0a100" }
            } else if past {
                "#a9d3b2"
            } else {
                "#2e8540"
            };
            let end = if n + 1 == segments.len() {
                format!("<span style=\"float:right\">{}</span>", to.0)
            } else {
                String::new()
            };
            marks.push_str(&format!(
                "<td width=\"{pct}%\" style=\"width:{pct}%;font-size:12px;line-height:14px;white-space:nowrap\">{}{end}</td>",
                from.0
            ));
            bar.push_str(&format!(
                "<td width=\"{pct}%\" height=\"14\" bgcolor=\"{fill}\" style=\"width:{pct}%;height:14px;background-color:{fill};font-size:1px;line-height:1px\">&nbsp;</td>"
            ));
        }
        let mut legend = String::new();
        for (mark, label, at) in &points {
            legend.push_str(&format!(
                "<tr><td style=\"padding:1px 8px 1px 0;font-weight:bold\">{mark} {label}</td><td style=\"padding:1px 0\">{}</td></tr>",
                escape(&timefmt::utc(*at))
            ));
        }
        format!(
            "<tr><td style=\"padding:0 16px\"><h3 style=\"margin:14px 0 4px 0;font-size:16px\">The token's life</h3>\
             <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse\"><tr>{marks}</tr></table>\
             <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;border:1px solid #cccccc\"><tr>{bar}</tr></table>\
             <table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"border-collapse:collapse;margin-top:4px;font-size:13px\">{legend}</table></td></tr>"
        )
    }
}

impl Life {
    /// The known points in time order, each with its mark and label.
    fn points(&self) -> Vec<(&'static str, &'static str, Timestamp)> {
        let mut p: Vec<(&'static str, &'static str, Timestamp)> = Vec::new();
        if let Some(i) = self.issued {
            p.push(("&#9679;", "Issued", i));
        }
        p.push(("&#9650;", "Now", self.now));
        if let Some(d) = self.due {
            p.push(("&#9670;", "Rotation due", d));
        }
        if let Some(d) = self.deadline {
            p.push(("&#9632;", "Deadline", d));
        }
        p.sort_by_key(|x| x.2);
        p
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Turns `backticked` runs into <code> (after escaping, so no markup can be injected).
fn code_spans(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<code>{part}</code>"));
        } else {
            out.push_str(part);
        }
    }
    out
}

fn when(t: Timestamp) -> String {
    format!("{} ({})", timefmt::utc(t), timefmt::pacific(t))
}

fn days(d: Duration) -> String {
    timefmt::span(d.as_secs() as i64)
}

/// Renders the email for `notice`.
pub fn render(ctx: &Context<'_>, notice: &Notice, now: Timestamp) -> Rendered {
    let left = ctx.effective.map(|e| e.at.as_second() - now.as_second());
    let (word, headline, lead) = headline(ctx, notice.condition, left, now);
    let subject = format!("[tokenwarden] {word} {}: {headline}", ctx.token);
    let deadline = ctx.effective.map(|e| e.at);
    let mut doc = Doc {
        head: Head {
            word: word.into(),
            token: Some(ctx.token.into()),
            headline,
            left: Some(match left {
                Some(l) if l > 0 => timefmt::span(l),
                Some(l) => format!("none: passed {} ago", timefmt::span(-l)),
                None => "unknown".into(),
            }),
            deadline: Some(
                ctx.effective
                    .map(|e| format!("{}, set by {}", when(e.at), e.binding.describe()))
                    .unwrap_or_else(|| "none known".into()),
            ),
            life: Some(Life {
                issued: ctx.facts.and_then(|f| f.issued_at),
                now,
                due: ctx.rotation_due,
                deadline,
            }),
        },
        lead,
        sections: Vec::new(),
    };
    doc.section("Facts", facts(ctx), false);
    doc.section(
        "What tokenwarden will do",
        next_steps(ctx, notice.condition),
        false,
    );
    let (title, mut steps) = person_steps(ctx, notice.condition);
    if notice.condition.is_some() && ctx.kind != crate::meta::kind::Kind::default() {
        steps.push(ctx.kind.advice().what_to_do());
    }
    doc.section(title, steps, true);
    doc.finish(subject)
}

/// Renders the email about targets found holding another token (re-pushed) or failing to
/// take the current one (retried on the next run).
pub fn render_targets(
    token: &str,
    current: crate::secret::Fingerprint,
    drifted: &[(String, String)],
    failed: &[(String, String)],
) -> Rendered {
    let mut facts: Vec<String> = drifted
        .iter()
        .map(|(n, found)| format!("Target {n} held {found} instead of the current token {current}; the current token was pushed again."))
        .collect();
    facts.extend(
        failed
            .iter()
            .map(|(n, e)| format!("Target {n} does not hold the current token {current}: {e}")),
    );
    let (word, headline) = if failed.is_empty() {
        (
            "DRIFT",
            format!(
                "{} target(s) changed behind tokenwarden's back, repaired",
                drifted.len()
            ),
        )
    } else {
        (
            "TARGET FAILING",
            format!("{} target(s) do not hold the current token", failed.len()),
        )
    };
    let mut doc = Doc {
        head: Head {
            word: word.into(),
            token: Some(token.into()),
            headline: headline.clone(),
            left: None,
            deadline: Some(if failed.is_empty() {
                "none: every target holds the current token again".into()
            } else {
                "now: the app behind a failing target may be running on an old token".into()
            }),
            life: None,
        },
        lead: format!(
            "Environments of {token} were out of step with the current token (fingerprint {current})."
        ),
        sections: Vec::new(),
    };
    doc.section("Facts", facts, false);
    doc.section(
        "What tokenwarden will do",
        vec!["Compare every readable target with the current token on each scheduled run, and push again where needed.".into()],
        false,
    );
    let mut todo = Vec::new();
    if !drifted.is_empty() {
        todo.push("Find out what wrote the old value (a restored backup, a deploy script, a person) and stop it.".into());
    }
    if !failed.is_empty() {
        todo.push("Fix the failing target as the message says; the app behind it may be running on an old token.".into());
    }
    todo.push("See every target with `tokenwarden status`.".into());
    doc.section("What you must do", todo, true);
    doc.finish(format!("[tokenwarden] {word} {token}: {headline}"))
}

/// What a host-level alert says: about tokenwarden's own files, not about one token.
#[derive(Debug, Clone)]
pub struct HostAlert<'a> {
    /// The subject's word in capitals (`STATE RESET`, `DISK FULL`).
    pub word: &'a str,
    /// The subject's headline.
    pub headline: &'a str,
    /// The first paragraph.
    pub lead: String,
    /// What happened.
    pub facts: Vec<String>,
    /// What tokenwarden does about it.
    pub will_do: Vec<String>,
    /// What the person must do, in order.
    pub todo: Vec<String>,
}

/// Renders a [`HostAlert`] (a state file set aside, a full disk).
pub fn render_host(a: &HostAlert<'_>) -> Rendered {
    let mut doc = Doc {
        head: Head {
            word: a.word.into(),
            token: None,
            headline: a.headline.into(),
            left: None,
            deadline: None,
            life: None,
        },
        lead: a.lead.clone(),
        sections: Vec::new(),
    };
    doc.section("Facts", a.facts.clone(), false);
    doc.section("What tokenwarden will do", a.will_do.clone(), false);
    doc.section("What you must do", a.todo.clone(), true);
    doc.finish(format!("[tokenwarden] {}: {}", a.word, a.headline))
}

/// Which rotation email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationMail {
    /// The new token is current.
    Promoted,
    /// The candidate failed a check.
    Rejected,
    /// A step failed for good.
    Failed,
    /// A target failed; the old token was put back; delivery is retried.
    DeliveryFailed,
    /// Copies of the old token remain; the revoke waits.
    CopiesRemain,
    /// Meta handed back the current token, living longer: nothing else changed.
    Extended,
}

impl RotationMail {
    /// A word for email ids.
    pub fn word(self) -> &'static str {
        match self {
            RotationMail::Promoted => "promoted",
            RotationMail::Rejected => "rejected",
            RotationMail::Failed => "failed",
            RotationMail::DeliveryFailed => "delivery-failed",
            RotationMail::CopiesRemain => "copies",
            RotationMail::Extended => "extended",
        }
    }
}

/// What a rotation email says about one rotation: the parts of its record that
/// [`render_rotation`] needs. `rotation::run` builds it from its `Rotation`, so that the words
/// of email sit below rotation in the module graph instead of importing its types (rotation
/// queues these emails, so the import would close a cycle).
#[derive(Debug, Clone)]
pub struct RotationFacts<'a> {
    /// The rotation id.
    pub id: &'a str,
    /// Where the new token comes from (`staged`, `refresh`, `mint`), in words.
    pub source: String,
    /// Why the rotation started, in words.
    pub reason: &'a str,
    /// When it started.
    pub started: Timestamp,
    /// The old token's fingerprint.
    pub old_fingerprint: &'a Fingerprint,
    /// The old token's version in the store.
    pub old_version: &'a str,
    /// The candidate's fingerprint, once obtained.
    pub new_fingerprint: Option<&'a Fingerprint>,
    /// What Meta said about the candidate, once validated.
    pub new_facts: Option<&'a TokenFacts>,
    /// When the old token is to be revoked (`None`: never).
    pub revoke_at: Option<Timestamp>,
    /// The last failure, in words.
    pub last_error: Option<&'a str>,
    /// How the rotation ended, if it has.
    pub end: RotationEnd<'a>,
    /// When the email is written (the "now" of the token's life picture).
    pub now: Timestamp,
    /// When the new token's own rotation falls due, once it is known.
    pub new_due: Option<Timestamp>,
}

/// How a rotation ended, as its email tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationEnd<'a> {
    /// Still running: the success email goes at the promotion, before the revoke.
    Running,
    /// Completed: the successor is current.
    Completed,
    /// The candidate failed the check named.
    Rejected {
        /// Which check failed, in words.
        check: &'a str,
    },
    /// A step failed for good.
    Failed {
        /// The step's name.
        step: &'static str,
        /// Whether the candidate was already current (the step retired the old token).
        promoted: bool,
        /// Why, in words.
        reason: &'a str,
    },
    /// Meta handed back the current token itself, living longer.
    Extended {
        /// The token's new expiry (`None`: never, or unknown).
        until: Option<Timestamp>,
    },
    /// Someone else promoted a different version first.
    Superseded {
        /// What was found.
        detail: &'a str,
    },
}

/// Renders the email about a rotation of `t`: the promotion (success), a rejected candidate,
/// a failed step, a failed delivery, or copies of the old token holding its revoke. `hint`
/// says how a person stages a token by hand.
pub fn render_rotation(
    t: &crate::config::TokenConfig,
    r: &RotationFacts<'_>,
    hint: &str,
    mail: RotationMail,
) -> Rendered {
    let new_fp = r
        .new_fingerprint
        .map(|f| f.to_string())
        .unwrap_or_else(|| "(none)".into());
    let new_until = r
        .new_facts
        .and_then(|f| crate::policy::effective_expiry(f, t.policy.max_age))
        .map(|e| when(e.at))
        .unwrap_or_else(|| "no known expiry".into());
    let mut facts = vec![
        format!("Token: {}", t.name),
        format!("Source of the new token: {}", r.source),
        format!(
            "Old token: fingerprint {} (store version {})",
            r.old_fingerprint, r.old_version
        ),
        format!("New token: fingerprint {new_fp}"),
        format!(
            "Rotation id: {} (started {}, because {})",
            r.id,
            timefmt::utc(r.started),
            r.reason
        ),
    ];
    let problem = r.last_error.unwrap_or_default().to_string();
    let (word, headline, lead, next, mut todo): (&str, String, String, Vec<String>, Vec<String>) = match (&r.end, mail) {
        (_, RotationMail::DeliveryFailed) => (
            "DELIVERY FAILED",
            problem.clone(),
            format!("Rotating {} stopped while delivering the new token: {problem}. The old token is still current and was put back on every environment that had changed.", t.name),
            vec!["Retry the delivery on every scheduled run until it succeeds; the old token stays in use meanwhile.".into()],
            vec![
                "Fix the target named above (its path, service, URL or command).".into(),
                format!("Run `tokenwarden rotate --token {}` to retry now (`--dry-run` first runs every target's verify).", t.name),
            ],
        ),
        (_, RotationMail::CopiesRemain) => (
            "OLD TOKEN STILL IN USE",
            "copies found, revoke on hold".to_string(),
            format!("The new token for {} is current, but copies of the old token (fingerprint {}) remain: {problem}. Revoking it now would break whatever reads those files, so the revoke waits.", t.name, r.old_fingerprint),
            vec!["Search again on every scheduled run, and revoke the old token as soon as no copy remains.".into()],
            vec![
                "Replace the old token in each file named above with the current one (or remove it), or add the file as a target so tokenwarden keeps it up to date.".into(),
                "Restart whatever reads those files.".into(),
            ],
        ),
        (RotationEnd::Running | RotationEnd::Completed, _) => {
            facts.push(format!("New token valid until: {new_until}"));
            let revoke = match r.revoke_at {
                Some(at) => format!("Revoke the old token at {} (after the grace period), then confirm with Meta that it is dead.", when(at)),
                None => "Keep the old token: `revoke_after = \"never\"` is configured. It stays valid until its own expiry.".into(),
            };
            (
                "ROTATED",
                format!("new token live, valid until {new_until}"),
                format!("Token {} was rotated: the new token passed every check with Meta and is now current in the store.", t.name),
                vec![revoke, "Keep checking the new token on schedule.".into()],
                vec![format!(
                    "Nothing, unless something outside tokenwarden's targets still uses the old token (fingerprint {}): update it before the old token is revoked.",
                    r.old_fingerprint
                )],
            )
        }
        (RotationEnd::Rejected { check }, _) => (
            "ROTATION REJECTED",
            check.to_string(),
            format!("A new token for {} was not used because it failed a check: {check}. The current token is untouched.", t.name),
            vec!["Leave the current token in place and keep warning before it expires.".into()],
            vec![
                "Fix what the check names (in Business Manager: the system user's assets, the app, the scopes).".into(),
                format!("Generate a new system-user token with whatsapp_business_management and whatsapp_business_messaging and stage it: {hint}."),
            ],
        ),
        (RotationEnd::Failed { step, promoted, reason }, _) => {
            let lead = if *promoted {
                format!("The new token for {} is current, but retiring the old one failed at step {step}: {reason}.", t.name)
            } else {
                format!("Rotating {} failed at step {step}: {reason}. The old token is still current and untouched.", t.name)
            };
            let todo = if *promoted {
                vec![format!("Revoke the old token (fingerprint {}) in Business Manager, or fix the cause and run `tokenwarden rotate --token {}`.", r.old_fingerprint, t.name)]
            } else {
                vec![
                    "Fix the cause named above.".into(),
                    format!("Run `tokenwarden rotate --token {}` to try again now, or stage a token by hand: {hint}.", t.name),
                ]
            };
            (
                "ROTATION FAILED",
                format!("{step} failed: {reason}"),
                lead,
                vec!["Try again on the next scheduled run, and keep warning before the token expires.".into()],
                todo,
            )
        }
        (RotationEnd::Extended { until: Some(until) }, _) => {
            let until = when(*until);
            facts.push(format!("Token valid until: {until}"));
            (
                "EXTENDED",
                format!("same token, now valid until {until}"),
                format!("Rotating {} asked Meta for a successor, and Meta handed back the current token itself (fingerprint {}) with a later expiry: the token was extended in place. Nothing was delivered, promoted or revoked; every environment keeps working on the token it has.", t.name, r.old_fingerprint),
                vec!["Keep checking the token on schedule; the next rotation is due from its new expiry.".into()],
                vec!["Nothing.".into()],
            )
        }
        (RotationEnd::Extended { until: None }, _) => {
            facts.push("Token valid until: it does not expire (or Meta did not say)".into());
            (
                "UNCHANGED",
                "Meta handed back the same token".into(),
                format!("Rotating {} asked Meta for a successor, and Meta handed back the current token itself (fingerprint {}), with no expiry to extend: a non-expiring token (a business token from `fetch_only`, a Page token taken again) stays as it is. Nothing was delivered, promoted or revoked; every environment keeps working on the token it has.", t.name, r.old_fingerprint),
                vec![
                    "Not ask Meta again for this token while it is current and does not expire (the same answer would come); keep checking it, and rotate it at once if it stops working.".into(),
                    "The rotation period (`max_age`) still counts from the token's issue time, and its warnings come as it ends.".into(),
                ],
                vec![
                    format!("Nothing now. Only a person can replace this token (for a business token, the customer's Embedded Signup; for a Page token, a new login); if your runbook does not ask that of a non-expiring token, set `max_age = \"never\"` on the token (or its group) so the period does not warn."),
                ],
            )
        }
        (RotationEnd::Superseded { detail }, _) => (
            "ROTATION SUPERSEDED",
            detail.to_string(),
            format!("The rotation of {} stopped: {detail}.", t.name),
            vec!["Check the token that is now current on the next run.".into()],
            vec!["Nothing, if the other change was intended.".into()],
        ),
    };
    if let Some(e) = r.last_error {
        facts.push(format!("Last error: {e}"));
    }
    todo.push(format!(
        "See the whole picture with `tokenwarden status` and `tokenwarden doctor --token {}`.",
        t.name
    ));
    // A rotation email has no `now` or old expiry to hand: its deadline is the new token's
    // when there is one, and otherwise says where the current token's own deadline is shown.
    let deadline = match (&r.end, mail) {
        (_, RotationMail::DeliveryFailed | RotationMail::CopiesRemain)
        | (
            RotationEnd::Rejected { .. }
            | RotationEnd::Failed { .. }
            | RotationEnd::Superseded { .. },
            _,
        ) => "the current token's own, unchanged (`tokenwarden status` shows it)".to_string(),
        (RotationEnd::Running | RotationEnd::Completed, _) => {
            format!("new token valid until {new_until}")
        }
        (RotationEnd::Extended { until }, _) => format!(
            "token valid until {}",
            until.map_or_else(|| "no known expiry".to_string(), when)
        ),
    };
    // A rotation that put a new token in place shows the new token's life.
    let life = match (&r.end, r.new_facts) {
        (RotationEnd::Running | RotationEnd::Completed | RotationEnd::Extended { .. }, Some(f)) => {
            Some(Life {
                issued: f.issued_at,
                now: r.now,
                due: r.new_due,
                deadline: crate::policy::effective_expiry(f, t.policy.max_age).map(|e| e.at),
            })
        }
        _ => None,
    };
    let mut doc = Doc {
        head: Head {
            word: word.into(),
            token: Some(t.name.clone()),
            headline: headline.clone(),
            left: None,
            deadline: Some(deadline),
            life,
        },
        lead,
        sections: Vec::new(),
    };
    doc.section("Facts", facts, false);
    doc.section("What tokenwarden will do", next, false);
    doc.section("What you must do", todo, true);
    doc.finish(format!("[tokenwarden] {word} {}: {headline}", t.name))
}

fn headline(
    ctx: &Context<'_>,
    condition: Option<Condition>,
    left: Option<i64>,
    now: Timestamp,
) -> (&'static str, String, String) {
    let deadline = ctx
        .effective
        .map(|e| when(e.at))
        .unwrap_or_else(|| "an unknown time".into());
    let why = ctx.effective.map(|e| e.binding);
    // Each kind's own words: "the Instagram token", "Instagram API calls made with it fail".
    let product = ctx.kind.product();
    let fails = ctx.kind.what_fails();
    let verdict_reason = match ctx.verdict {
        Verdict::Dead { reason, .. } | Verdict::Unusable { reason } => reason.clone(),
        Verdict::OwnCredentials { detail }
        | Verdict::OtherApp { detail }
        | Verdict::StoreProblem { detail }
        | Verdict::Unreachable { detail }
        | Verdict::Throttled { detail, .. } => detail.clone(),
        Verdict::Healthy => String::new(),
    };
    match condition {
        None => (
            "RESOLVED",
            format!("{product} token healthy again"),
            format!(
                "The {product} token \"{}\" is healthy again{}. No action is needed.",
                ctx.token,
                ctx.facts
                    .map(|f| format!(" (fingerprint {})", f.fingerprint))
                    .unwrap_or_default()
            ),
        ),
        Some(Condition::Threshold(_)) | Some(Condition::Critical)
            if why == Some(Binding::MaxAge) && left.is_some_and(|l| l <= 0) =>
        {
            (
                "CRITICAL",
                format!("{product} token is overdue for rotation"),
                format!(
                    "The {product} token \"{}\" passed its rotation period on {deadline}. It still works, but the runbook rotates tokens every {}.",
                    ctx.token,
                    days(ctx.policy.max_age.unwrap_or_default())
                ),
            )
        }
        Some(Condition::Threshold(_)) | Some(Condition::Critical) => {
            let span = left.map(timefmt::span).unwrap_or_default();
            let word = if condition == Some(Condition::Critical) {
                "CRITICAL"
            } else {
                "WARNING"
            };
            let what = match why {
                Some(Binding::MaxAge) => "is due for rotation",
                Some(Binding::DataAccess) => "loses data access",
                _ => "expires",
            };
            (
                word,
                format!("{product} token {what} in {span}"),
                format!(
                    "The {product} token \"{}\" {what} in {span}, on {deadline}. After that, {fails}.",
                    ctx.token
                ),
            )
        }
        Some(Condition::Expired) => {
            let ago = left
                .map(|l| format!(" {} ago", timefmt::span(l)))
                .unwrap_or_default();
            (
                "EXPIRED",
                format!("{product} token expired{ago}"),
                format!(
                    "The {product} token \"{}\" has expired{}. {} now. {verdict_reason}",
                    ctx.token,
                    ctx.effective
                        .map(|e| format!(" (on {})", when(e.at)))
                        .unwrap_or_default(),
                    capitalized(fails)
                ),
            )
        }
        Some(Condition::Invalid) => (
            "INVALID",
            format!("{product} token is invalid"),
            format!(
                "Meta says the {product} token \"{}\" is no longer valid: {verdict_reason}. {} now.",
                ctx.token,
                capitalized(fails)
            ),
        ),
        Some(Condition::Unusable) => (
            "CRITICAL",
            if ctx.kind.product() == "WhatsApp" {
                "WhatsApp token cannot send messages".into()
            } else {
                format!("{product} token cannot do its job")
            },
            format!(
                "The {product} token \"{}\" is valid but cannot do its job: {verdict_reason}.",
                ctx.token
            ),
        ),
        Some(Condition::CannotCheck) => {
            let since = ctx
                .failing_since
                .map(|s| timefmt::span(now.as_second() - s.as_second()))
                .unwrap_or_default();
            (
                "UNKNOWN",
                format!("cannot check the {product} token for {since}"),
                format!(
                    "tokenwarden has not been able to check the {product} token \"{}\" for {since}: {verdict_reason}. This is not a verdict on the token: it may be fine.",
                    ctx.token
                ),
            )
        }
        Some(Condition::OtherApp) => (
            "CONFIG",
            format!("the {product} token belongs to another app"),
            format!(
                "Meta will not inspect the {product} token \"{}\" with tokenwarden's app, although the app's own credentials work: {verdict_reason}. The token was made for another Meta app (or `[meta]` names the wrong app). This says nothing about whether the token works, and tokenwarden will not rotate on it.",
                ctx.token
            ),
        ),
        Some(Condition::StoreProblem) => (
            "CRITICAL",
            format!("cannot read the {product} token from its store"),
            format!(
                "tokenwarden cannot read the {product} token \"{}\": {verdict_reason}.",
                ctx.token
            ),
        ),
    }
}

/// `text` with its first letter in capitals.
fn capitalized(text: &str) -> String {
    let mut c = text.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn facts(ctx: &Context<'_>) -> Vec<String> {
    let mut out = vec![format!("Token: {} (state {})", ctx.token, ctx.state.word())];
    if let Some(f) = ctx.facts {
        let app = match (&f.application, &f.app_id) {
            (Some(n), Some(id)) => format!("{n} ({id})"),
            (None, Some(id)) => id.clone(),
            _ => "unknown".into(),
        };
        out.push(format!("App: {app}"));
        out.push(format!(
            "Type: {}",
            f.token_type.as_deref().unwrap_or("unknown")
        ));
        out.push(format!(
            "Scopes: {}",
            if f.scopes.is_empty() {
                "none".into()
            } else {
                f.scopes.join(", ")
            }
        ));
        out.push(format!(
            "WABAs: {}",
            if f.wabas.is_empty() {
                "none".into()
            } else {
                f.wabas.join(", ")
            }
        ));
        out.push(match f.expires {
            crate::policy::Expires::Never => "Expires: never (Meta's expires_at is 0)".to_string(),
            crate::policy::Expires::At(t) => format!("Expires: {}", when(t)),
            crate::policy::Expires::Unknown => "Expires: not reported by Meta".to_string(),
        });
        if let Some(d) = f.data_access_expires_at {
            out.push(format!("Data access expires: {}", when(d)));
        }
        if let Some(i) = f.issued_at {
            out.push(format!("Issued: {}", timefmt::utc(i)));
        }
        out.push(format!(
            "Fingerprint: {} (first 8 hex digits of the token's SHA-256)",
            f.fingerprint
        ));
    }
    if let Some(e) = ctx.effective {
        out.push(format!(
            "Deadline: {}, set by {}",
            when(e.at),
            e.binding.describe()
        ));
    }
    if let Some(w) = ctx.waba_id {
        out.push(format!("Configured WABA: {w}"));
    }
    if let Some(p) = ctx.phone_number_id {
        out.push(format!("Configured phone-number id: {p}"));
    }
    out.push(format!("Store: {}", ctx.store));
    out
}

fn next_steps(ctx: &Context<'_>, condition: Option<Condition>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(n) = ctx.next_check {
        out.push(format!("Check the token again at {}.", timefmt::utc(n)));
    }
    match condition {
        None => out.push("Keep checking on schedule and warn again before the next deadline.".into()),
        Some(Condition::Threshold(t)) => {
            let later: Vec<String> = ctx.policy.thresholds.iter().filter(|d| d.as_secs() < t).map(|d| days(*d)).collect();
            if !later.is_empty() {
                out.push(format!("Warn again {} before the deadline; within the last threshold, repeat the alert every {}.", later.join(", "), days(ctx.policy.repeat_interval)));
            }
        }
        Some(Condition::CannotCheck) => out.push(format!(
            "Keep retrying; repeat this alert every {} while checks fail, and send a recovery email when a check succeeds.",
            days(ctx.policy.repeat_interval)
        )),
        Some(_) => out.push(format!("Repeat this alert every {} until it is fixed, then send one recovery email.", days(ctx.policy.repeat_interval))),
    }
    if condition.is_some()
        && !matches!(
            condition,
            Some(Condition::OtherApp) | Some(Condition::CannotCheck)
        )
    {
        out.push(ctx.rotation.to_string());
    }
    out
}

fn person_steps(ctx: &Context<'_>, condition: Option<Condition>) -> (String, Vec<String>) {
    let by = ctx
        .effective
        .filter(|e| e.at.as_second() > 0)
        .map(|e| format!(", by {}", timefmt::utc(e.at)))
        .unwrap_or_default();
    match condition {
        None => (String::from("What you must do"), vec!["Nothing.".into()]),
        Some(Condition::OtherApp) => (
            "What you must do".into(),
            vec![
                "Find which app the token belongs to: paste it into Meta's Access Token Debugger (developers.facebook.com/tools/debug/accesstoken) and compare its App ID with `app_id` in tokenwarden's [meta].".into(),
                "Either put a token of that app where this token's store points (make it in Business Settings > System users, choosing this app), or, when the whole config should watch the other app, set `app_id` and `app_secret` in [meta] to that app's.".into(),
                format!("Check with `tokenwarden doctor --token {}`, then reload tokenwarden (`systemctl reload tokenwarden`).", ctx.token),
            ],
        ),
        Some(Condition::CannotCheck) => (
            "What you must do".into(),
            vec![
                format!("Check this host's route to {} (DNS, proxy, firewall) and Meta's status page.", ctx.kind.host()),
                format!("Run `tokenwarden doctor --token {}` to see the failure.", ctx.token),
            ],
        ),
        Some(Condition::StoreProblem) => (
            format!("What you must do{by}"),
            vec![format!("Fix the store as the message says, or put the token there: {}.", ctx.store_hint), format!("Check with `tokenwarden doctor --token {}`.", ctx.token)],
        ),
        Some(_) => {
            let waba = ctx.waba_id.map(|w| format!(" and the WhatsApp Business Account {w}")).unwrap_or_default();
            (
                format!("What you must do{by}"),
                vec![
                    format!("In Meta Business Manager > Users > System users, choose an Admin system user that has the app{waba} assigned (full control)."),
                    "Click \"Generate new token\", select the app, choose the expiry (60 days is recommended), and tick whatsapp_business_management and whatsapp_business_messaging.".into(),
                    format!("Stage it: `tokenwarden stage --token {}` (paste it on standard input; it is checked with Meta first), then switch to it with `tokenwarden rotate --token {}`.", ctx.token, ctx.token),
                    "Update every environment that uses the token (for example WHATSAPP_ACCESS_TOKEN in backend/.env, production and staging) and restart the services.".into(),
                    format!("Check with `tokenwarden doctor --token {}`, then revoke the old token.", ctx.token),
                    "If this is not done in time, only a person in Business Manager can restore messaging: an expired token cannot be refreshed.".into(),
                ],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Expires, Ledger, assess, decide};
    use crate::secret::Fingerprint;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_790_000_000;

    fn facts() -> TokenFacts {
        TokenFacts {
            fingerprint: Fingerprint::of("t"),
            app_id: Some("634974688087057".into()),
            application: Some("BillByteKOT Receipts".into()),
            token_type: Some("SYSTEM_USER".into()),
            expires: Expires::At(Timestamp::from_second(NOW + 7 * DAY).unwrap()),
            data_access_expires_at: None,
            issued_at: Some(Timestamp::from_second(NOW - 53 * DAY).unwrap()),
            scopes: vec![
                "whatsapp_business_management".into(),
                "whatsapp_business_messaging".into(),
            ],
            wabas: vec!["102290129340398".into()],
        }
    }

    fn render_for(verdict: Verdict, now: i64) -> Rendered {
        render_kind(crate::meta::kind::Kind::Whatsapp, verdict, now)
    }

    fn render_kind(kind: crate::meta::kind::Kind, verdict: Verdict, now: i64) -> Rendered {
        let p = Policy {
            max_age: None,
            ..Policy::default()
        };
        let f = facts();
        let now = Timestamp::from_second(now).unwrap();
        let a = assess(
            &verdict,
            Some(&f),
            Some(Timestamp::from_second(NOW - DAY).unwrap()),
            &p,
            now,
        );
        let (notices, _) = decide(&Ledger::default(), &a, Some(f.fingerprint), &p, now);
        let ctx = Context {
            token: "billbytekot-prod",
            kind,
            waba_id: Some("102290129340398"),
            phone_number_id: Some("106540352242922"),
            store: "file store",
            store_hint: "`tokenwarden import --token billbytekot-prod`",
            facts: Some(&f),
            verdict: &verdict,
            state: a.state,
            effective: a.effective,
            policy: &p,
            next_check: Some(now),
            failing_since: Some(Timestamp::from_second(NOW - DAY).unwrap()),
            rotation: "Promote a new token as soon as one is staged.",
            rotation_due: Some(Timestamp::from_second(NOW).unwrap()),
        };
        let notice = notices
            .iter()
            .find(|n| !matches!(n.condition, Some(Condition::Threshold(_))))
            .unwrap_or(&notices[0]);
        render(&ctx, notice, now)
    }

    /// An Instagram, Threads, Page, ads or customer token's email names its own product and
    /// what stops working, never "WhatsApp" for a token that is not one.
    #[test]
    fn each_kind_is_named_by_its_product_in_the_headline_and_lead() {
        use crate::meta::kind::Kind;
        for (kind, subject, fails) in [
            (
                Kind::Instagram,
                "Instagram token expires in 7 days",
                "Instagram API calls made with it fail",
            ),
            (
                Kind::Threads,
                "Threads token expires in 7 days",
                "Threads API calls made with it fail",
            ),
            (
                Kind::Page,
                "Facebook Page token expires in 7 days",
                "Page and Messenger calls made with it fail",
            ),
            (
                Kind::Marketing,
                "Marketing API token expires in 7 days",
                "ads calls and reports made with it fail",
            ),
        ] {
            let r = render_kind(kind, Verdict::Healthy, NOW);
            assert!(r.subject.ends_with(subject), "{kind:?}: {}", r.subject);
            assert!(r.text.contains(fails), "{kind:?}: {}", r.text);
            assert!(!r.summary.headline.contains("WhatsApp"), "{kind:?}");
        }
        // A check failing for long: the route to check is the kind's own host.
        let down = render_kind(
            Kind::Instagram,
            Verdict::Unreachable {
                detail: "no answer within the timeout".into(),
            },
            NOW,
        );
        assert!(
            down.subject.contains("cannot check the Instagram token"),
            "{}",
            down.subject
        );
        assert!(
            down.text.contains("route to graph.instagram.com")
                && !down.text.contains("graph.facebook.com"),
            "{}",
            down.text
        );
        let dead = Verdict::Dead {
            reason: "the session was invalidated".into(),
            expired: false,
        };
        let r = render_kind(Kind::Instagram, dead, NOW);
        assert!(
            r.subject.contains("Instagram token is invalid"),
            "{}",
            r.subject
        );
        assert!(
            r.text.contains("Instagram API calls made with it fail now"),
            "{}",
            r.text
        );
    }

    #[test]
    fn warning_subject_and_body_say_what_when_and_how() {
        let r = render_for(Verdict::Healthy, NOW);
        assert_eq!(
            r.subject,
            "[tokenwarden] WARNING billbytekot-prod: WhatsApp token expires in 7 days"
        );
        for want in [
            "UTC",
            "PDT",
            "BillByteKOT Receipts (634974688087057)",
            "SYSTEM_USER",
            "102290129340398",
            "Fingerprint:",
            "Generate new token",
            "whatsapp_business_messaging",
            "tokenwarden stage --token billbytekot-prod",
            "tokenwarden rotate --token billbytekot-prod",
            "Promote a new token as soon as one is staged.",
            "Warn again 3 days, 24 hours before the deadline",
        ] {
            assert!(r.text.contains(want), "missing {want:?} in:\n{}", r.text);
        }
        assert!(
            r.html
                .contains("<code>tokenwarden stage --token billbytekot-prod</code>"),
            "{}",
            r.html
        );
        assert!(r.html.contains("<ol>"));
    }

    #[test]
    fn each_condition_has_its_own_subject() {
        assert!(
            render_for(Verdict::Healthy, NOW + 6 * DAY + 3600)
                .subject
                .contains("CRITICAL billbytekot-prod: WhatsApp token expires in 23 hours")
        );
        assert!(
            render_for(Verdict::Healthy, NOW + 8 * DAY)
                .subject
                .contains("EXPIRED billbytekot-prod: WhatsApp token expired 24 hours ago")
        );
        assert!(
            render_for(
                Verdict::Dead {
                    reason: "the token was invalidated by an API call (revoked)".into(),
                    expired: false
                },
                NOW
            )
            .subject
            .contains("INVALID")
        );
        let creds = render_for(
            Verdict::OtherApp {
                detail: "code 100 (HTTP 400): (#100) The App_id in the input_token did not match the Viewing App".into(),
            },
            NOW + 5 * DAY,
        );
        let subjects = [creds.subject.clone()];
        assert!(
            subjects[0]
                .contains("CONFIG billbytekot-prod: the WhatsApp token belongs to another app"),
            "{subjects:?}"
        );
        assert!(
            creds.text.contains("Access Token Debugger")
                && !creds.text.contains("Generate new token"),
            "{}",
            creds.text
        );
        let down = render_for(
            Verdict::Unreachable {
                detail: "no answer within the timeout".into(),
            },
            NOW,
        );
        assert!(
            down.subject
                .contains("UNKNOWN billbytekot-prod: cannot check the WhatsApp token for 24 hours"),
            "{}",
            down.subject
        );
        assert!(down.text.contains("not a verdict on the token"));
    }

    /// On-call reads the top: severity, token, time left and deadline first, then what to do,
    /// then what tokenwarden does, then the facts, in both parts.
    #[test]
    fn both_parts_put_the_headline_and_what_to_do_before_the_facts() {
        let r = render_for(Verdict::Healthy, NOW);
        for (part, body) in [("text", &r.text), ("html", &r.html)] {
            let at = |w: &str| {
                body.find(w)
                    .unwrap_or_else(|| panic!("{part}: missing {w:?} in:\n{body}"))
            };
            let order = [
                at("WARNING"),
                at("billbytekot-prod"),
                at("Time left"),
                at("2026-09-28 14:13 UTC"),
                at("What you must do"),
                at("What tokenwarden will do"),
                at("The token's life"),
                at("Fingerprint:"),
            ];
            assert!(order.is_sorted(), "{part}: out of order {order:?}:\n{body}");
        }
        assert!(r.text.starts_with(
            "WARNING billbytekot-prod: WhatsApp token expires in 7 days\nTime left: 7 days\n"
        ));
        // The picture: issued, now, rotation due and deadline, in time order, in the text too.
        let life = &r.text[r.text.find("The token's life").unwrap()..];
        let order = ["Issued", "Now", "Rotation due", "Deadline"].map(|w| life.find(w).unwrap());
        assert!(order.is_sorted(), "{life}");
        // Mail-safe HTML: no class, no script, no image, no external resource.
        for banned in [
            "class=", "<script", "<img", "<style", "<link", "src=", "url(", "http",
        ] {
            assert!(!r.html.contains(banned), "{banned} in {}", r.html);
        }
        assert!(
            r.html.contains("bgcolor=\"#a15c00\""),
            "amber banner for a warning"
        );
    }

    #[test]
    fn html_escapes_what_it_quotes() {
        let r = render_for(
            Verdict::Dead {
                reason: "<script>alert(1)</script>".into(),
                expired: false,
            },
            NOW,
        );
        assert!(!r.html.contains("<script>") && r.html.contains("&lt;script&gt;"));
    }
}
