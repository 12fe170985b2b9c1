//! `tokenwarden check` (one pass, monitoring-plugin exit codes) and `tokenwarden status`
//! (the daemon's last known state, no network).
//!
//! `check` changes nothing: it neither writes the state nor sends email, so it can run from
//! cron or Nagios beside the daemon. Its exit code is the worst token's: 0 OK, 1 WARNING,
//! 2 CRITICAL, 3 UNKNOWN.

use jiff::Timestamp;
use serde::Serialize;

use crate::config::Config;
use crate::graph::GraphClient;
use crate::observe::{BATCHES_IN_FLIGHT, observe, observe_many};
use crate::policy::{self, State, Verdict};
use crate::state::{Snapshot, TokenState};
use crate::timefmt;

/// One token's line.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// The token.
    pub token: String,
    /// Its kind (`whatsapp`, `instagram`, ...).
    pub kind: crate::config::Kind,
    /// Its state.
    #[serde(flatten)]
    pub state: State,
    /// What the state means, in words.
    pub summary: String,
    /// Effective expiry.
    pub effective_expiry: Option<Timestamp>,
    /// Seconds until then (negative when past).
    pub seconds_left: Option<i64>,
    /// Fingerprint of the value checked.
    pub fingerprint: Option<String>,
}

/// Checks each token once.
pub async fn run(
    cfg: &Config,
    graph: &GraphClient,
    only: Option<&str>,
    now: Timestamp,
) -> Vec<Line> {
    let mut out = Vec::new();
    let tokens: Vec<crate::config::TokenConfig> = cfg
        .tokens
        .iter()
        .filter(|t| only.is_none_or(|n| n == t.name))
        .cloned()
        .collect();
    // One token: the plain calls (fewest round trips); many: Graph batch requests.
    let observed = if tokens.len() == 1 {
        vec![observe(cfg, &tokens[0], graph).await]
    } else {
        observe_many(cfg, &tokens, graph, BATCHES_IN_FLIGHT)
            .await
            .into_iter()
            .map(|o| (o.verdict, o.facts))
            .collect()
    };
    for (t, (verdict, facts)) in tokens.iter().zip(observed) {
        // A single transient failure in a one-shot check is UNKNOWN: it has nothing older.
        let unknown = matches!(
            verdict,
            Verdict::Unreachable { .. } | Verdict::Throttled { .. }
        );
        let since = unknown.then_some(now);
        let a = policy::assess(&verdict, facts.as_ref(), since, &t.policy, now);
        let state = match verdict {
            Verdict::Unreachable { .. } | Verdict::Throttled { .. } => State::Unknown,
            _ => a.state,
        };
        out.push(Line {
            token: t.name.clone(),
            kind: t.kind,
            state,
            summary: match (&verdict, a.effective) {
                // Instagram and Threads do not report an expiry: say so rather than "no expiry".
                (Verdict::Healthy, None) if !t.kind.debug_token() => format!(
                    "valid; expiry unknown until tokenwarden refreshes it ({} does not report it; the refresh records Meta's expires_in)",
                    t.kind.host()
                ),
                _ => summary(&verdict, a.effective.map(|e| e.at), now),
            },
            effective_expiry: a.effective.map(|e| e.at),
            seconds_left: a.effective.map(|e| e.at.as_second() - now.as_second()),
            fingerprint: facts.map(|f| f.fingerprint.to_string()),
        });
    }
    out
}

fn summary(verdict: &Verdict, deadline: Option<Timestamp>, now: Timestamp) -> String {
    let when = |t: Timestamp| {
        let left = t.as_second() - now.as_second();
        if left >= 0 {
            format!("deadline in {} ({})", timefmt::span(left), timefmt::utc(t))
        } else {
            format!(
                "deadline passed {} ago ({})",
                timefmt::span(left),
                timefmt::utc(t)
            )
        }
    };
    match verdict {
        Verdict::Healthy => deadline
            .map(when)
            .unwrap_or_else(|| "valid, no expiry".into()),
        Verdict::Dead { reason, .. } => reason.clone(),
        Verdict::Unusable { reason } => format!("valid but unusable: {reason}"),
        Verdict::OwnCredentials { detail } => {
            format!("cannot inspect, tokenwarden's app credentials were refused: {detail}")
        }
        Verdict::OtherApp { detail } => {
            format!("cannot inspect, the token belongs to another app: {detail}")
        }
        Verdict::StoreProblem { detail } => detail.clone(),
        Verdict::Unreachable { detail } => format!("cannot check: {detail}"),
        Verdict::Throttled {
            retry_after_secs,
            detail,
        } => format!(
            "throttled by Meta{} (not a token problem): {detail}",
            retry_after_secs
                .map(|s| format!(
                    ", access returns in about {} ({})",
                    timefmt::span(s as i64),
                    timefmt::utc(Timestamp::from_second(now.as_second() + s as i64).unwrap_or(now))
                ))
                .unwrap_or_default()
        ),
    }
    .replace('\n', " ")
}

/// The exit code for a set of lines: the worst state's plugin code.
pub fn exit_code(lines: &[Line]) -> u8 {
    // Plugin convention: CRITICAL (2) outranks UNKNOWN (3) and WARNING (1).
    let codes: Vec<u8> = lines.iter().map(|l| l.state.plugin_code()).collect();
    if codes.contains(&2) {
        2
    } else if codes.contains(&3) {
        3
    } else {
        codes.into_iter().max().unwrap_or(3)
    }
}

/// The check lines as text, one per token.
pub fn render(lines: &[Line]) -> String {
    lines
        .iter()
        .map(|l| {
            format!(
                "{} {}{}: {}\n",
                l.state.word(),
                l.token,
                kind_tag(l.kind),
                l.summary
            )
        })
        .collect()
}

/// ` [instagram]` after a token's name in text output; nothing for the default kind, so a
/// WhatsApp-only setup reads as it always did.
fn kind_tag(kind: crate::config::Kind) -> String {
    if kind == crate::config::Kind::default() {
        String::new()
    } else {
        format!(" [{kind}]")
    }
}

/// One row of `status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// The token.
    pub token: String,
    /// Its kind.
    pub kind: crate::config::Kind,
    /// What the daemon last recorded.
    #[serde(flatten)]
    pub state: TokenState,
    /// The latest rotation (in progress or finished), from the state directory.
    pub rotation: Option<crate::rotation::Rotation>,
    /// Each target's last push, by name.
    pub targets: std::collections::BTreeMap<String, crate::delivery::TargetRecord>,
}

/// `status` rows for the configured tokens (tokens never checked appear with empty fields).
pub fn status(cfg: &Config, snap: &Snapshot) -> Vec<StatusRow> {
    cfg.tokens
        .iter()
        .map(|t| StatusRow {
            token: t.name.clone(),
            kind: t.kind,
            state: snap.tokens.get(&t.name).cloned().unwrap_or_default(),
            // An unreadable record is shown as none; `rotate` reports the error itself.
            rotation: crate::rotation::run::RotationLog::new(&cfg.state_dir)
                .load(&t.name)
                .ok()
                .flatten(),
            targets: crate::delivery::TargetLog::new(&cfg.state_dir).load_or_empty(&t.name),
        })
        .collect()
}

/// The status table as text.
pub fn render_status(rows: &[StatusRow], now: Timestamp) -> String {
    let mut out = String::new();
    for r in rows {
        let s = &r.state;
        let state = s.state.map(|s| s.word()).unwrap_or("NEVER CHECKED");
        out.push_str(&format!("{} {}{}\n", state, r.token, kind_tag(r.kind)));
        if let Some(e) = s.effective {
            let left = e.at.as_second() - now.as_second();
            let rel = if left >= 0 {
                format!("in {}", timefmt::span(left))
            } else {
                format!("{} ago", timefmt::span(left))
            };
            out.push_str(&format!(
                "  deadline     {} ({rel}; {})\n",
                timefmt::utc(e.at),
                e.binding.describe()
            ));
        }
        if let Some(f) = &s.facts {
            out.push_str(&format!("  fingerprint  {}\n", f.fingerprint));
        }
        let ago = |t: Timestamp| {
            format!(
                "{} ({} ago)",
                timefmt::utc(t),
                timefmt::span(now.as_second() - t.as_second())
            )
        };
        out.push_str(&format!(
            "  last check   {}\n",
            s.last_check.map(ago).unwrap_or_else(|| "never".into())
        ));
        if let Some(t) = s.last_success.filter(|t| Some(*t) != s.last_check) {
            out.push_str(&format!("  last success {}\n", ago(t)));
        }
        if let Some(n) = s.next_check {
            out.push_str(&format!("  next check   {}\n", timefmt::utc(n)));
        }
        if let Some(crate::policy::Verdict::Throttled { detail, .. }) = &s.verdict {
            let until = s
                .throttled_until
                .filter(|u| *u > now)
                .map(|u| format!("until {}", timefmt::utc(u)))
                .unwrap_or_else(|| "until its next scheduled check".into());
            out.push_str(&format!(
                "  throttled    by Meta, check deferred {until}: {detail}\n"
            ));
        }
        if let Some((t, subject)) = &s.last_email {
            out.push_str(&format!("  last email   {}: {subject}\n", ago(*t)));
        }
        if let Some(rot) = &r.rotation {
            out.push_str(&format!("  rotation     {}\n", rotation_line(rot, now)));
        }
        for (name, t) in &r.targets {
            let when = t
                .last_push
                .map(|p| {
                    format!(
                        "{} ({})",
                        timefmt::utc(p),
                        t.event.map_or("push", |e| e.word())
                    )
                })
                .unwrap_or_else(|| "never pushed".into());
            let result = match (&t.error, t.ok) {
                (_, true) => format!(
                    "ok, holds {}",
                    t.fingerprint.map(|f| f.to_string()).unwrap_or_default()
                ),
                (Some(e), false) => format!("FAILED: {e}"),
                (None, false) => "FAILED".into(),
            };
            out.push_str(&format!(
                "  target       {name} ({}): {result}; last push {when}\n",
                t.kind
            ));
        }
    }
    out
}

/// One line about a rotation: where it stands, or how it ended.
fn rotation_line(r: &crate::rotation::Rotation, now: Timestamp) -> String {
    use crate::rotation::{Outcome, Progress, Step};
    let when = |t: Timestamp| timefmt::utc(t);
    match (&r.outcome, r.step) {
        (None, Progress::Next(Step::Revoke)) => format!(
            "switched {} ({}); the old token is to be revoked at {}",
            r.promoted_at.map(when).unwrap_or_default(),
            r.source,
            r.revoke_at.map(when).unwrap_or_default()
        ),
        (None, step) => format!(
            "in progress since {} ({}), next step {}{}",
            when(r.started),
            r.source,
            step.word(),
            r.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ),
        (Some(Outcome::Completed { .. }), _) => format!(
            "completed {} ({}, {} ago)",
            when(r.updated),
            r.source,
            timefmt::span(now.as_second() - r.updated.as_second())
        ),
        (Some(Outcome::Rejected { check }), _) => {
            format!("candidate rejected {}: {check}", when(r.updated))
        }
        (Some(Outcome::Failed { step, reason }), _) => {
            format!("failed {} at {}: {reason}", when(r.updated), step.word())
        }
        (Some(Outcome::Superseded { detail }), _) => {
            format!("stopped {}: {detail}", when(r.updated))
        }
        (Some(Outcome::Extended { until: Some(until) }), _) => format!(
            "extended in place {} (Meta handed back the same token, valid until {})",
            when(r.updated),
            timefmt::utc(*until)
        ),
        (Some(Outcome::Extended { until: None }), _) => format!(
            "unchanged {} (Meta handed back the same token, which does not expire; not asked again while it is current)",
            when(r.updated)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(state: State) -> Line {
        Line {
            token: "t".into(),
            kind: crate::config::Kind::Whatsapp,
            state,
            summary: String::new(),
            effective_expiry: None,
            seconds_left: None,
            fingerprint: None,
        }
    }

    #[test]
    fn the_worst_state_sets_the_exit_code() {
        assert_eq!(exit_code(&[line(State::Ok)]), 0);
        assert_eq!(
            exit_code(&[line(State::Ok), line(State::Warning { threshold_secs: 1 })]),
            1
        );
        assert_eq!(
            exit_code(&[
                line(State::Unknown),
                line(State::Warning { threshold_secs: 1 })
            ]),
            3
        );
        assert_eq!(exit_code(&[line(State::Unknown), line(State::Expired)]), 2);
        assert_eq!(exit_code(&[]), 3);
    }
}
