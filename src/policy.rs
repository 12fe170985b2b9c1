//! When a token is in trouble, and who must hear about it. Pure: no IO; `now` is an argument.
//!
//! Three steps. [`effective_expiry`]: the earliest of Meta's `expires_at`, the data-access
//! expiry of user tokens, and `issued_at + max_age` (so even a never-expiring token is rotated
//! on the runbook's schedule). [`assess`]: the token's [`State`] and the [`Condition`]s worth an
//! email, from the latest check's [`Verdict`] and the last known [`TokenFacts`] (expiry is
//! wall-clock: thresholds are crossed even while Graph is unreachable). [`decide`]: which
//! emails to send now, given the [`Ledger`] of what was already sent: each threshold once per
//! token version, critical conditions again every `repeat_interval`, one recovery after trouble.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::secret::Fingerprint;

/// What `debug_token` said about a token version, kept in the state so that policy can be
/// re-evaluated without a network call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFacts {
    /// Which token version these facts are about.
    pub fingerprint: Fingerprint,
    /// Owning app id.
    pub app_id: Option<String>,
    /// Owning app name.
    pub application: Option<String>,
    /// `SYSTEM_USER`, `USER`, ...
    pub token_type: Option<String>,
    /// Meta's expiry.
    pub expires: Expires,
    /// Data-access expiry (user tokens).
    pub data_access_expires_at: Option<Timestamp>,
    /// Issue time.
    pub issued_at: Option<Timestamp>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// WABAs among the WhatsApp scopes' targets.
    pub wabas: Vec<String>,
}

/// Meta's `expires_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expires {
    /// `expires_at: 0`.
    Never,
    /// A moment.
    At(Timestamp),
    /// Not reported.
    Unknown,
}

/// Per-token policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Warning thresholds before the effective expiry, longest first; the last (shortest) one
    /// starts the critical state.
    pub thresholds: Vec<Duration>,
    /// How often critical, expired and invalid conditions are emailed again.
    pub repeat_interval: Duration,
    /// How long checks may fail transiently before on-call hears "cannot check".
    pub cannot_check_after: Duration,
    /// Rotation period: a token older than this is due, whatever Meta's expiry says.
    pub max_age: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Policy {
            thresholds: [14, 7, 3, 1]
                .iter()
                .map(|d| Duration::from_secs(d * DAY))
                .collect(),
            repeat_interval: Duration::from_secs(DAY),
            cannot_check_after: Duration::from_secs(6 * 3600),
            max_age: Some(Duration::from_secs(60 * DAY)),
        }
    }
}

/// Which limit makes the effective expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Meta's `expires_at`.
    Expiry,
    /// The user token's data-access expiry.
    DataAccess,
    /// `issued_at + max_age`: the rotation period.
    MaxAge,
}

impl Binding {
    /// Plain words.
    pub fn describe(self) -> &'static str {
        match self {
            Binding::Expiry => "Meta's expiry of the token",
            Binding::DataAccess => {
                "the end of the token's data access (user tokens lose it 90 days after issue)"
            }
            Binding::MaxAge => "the rotation period (max_age) since the token was issued",
        }
    }
}

/// The moment a token stops being acceptable, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effective {
    /// When.
    pub at: Timestamp,
    /// Which limit.
    pub binding: Binding,
}

/// The earliest limit on the token, or `None` when it has none that is known.
pub fn effective_expiry(f: &TokenFacts, max_age: Option<Duration>) -> Option<Effective> {
    let mut candidates = Vec::new();
    if let Expires::At(t) = f.expires {
        candidates.push(Effective {
            at: t,
            binding: Binding::Expiry,
        });
    }
    // System-user tokens report 0 here; for user tokens it is a real limit.
    if let Some(t) = f.data_access_expires_at {
        candidates.push(Effective {
            at: t,
            binding: Binding::DataAccess,
        });
    }
    if let (Some(issued), Some(age)) = (f.issued_at, max_age) {
        let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX / 2);
        if let Ok(t) = Timestamp::from_second(issued.as_second().saturating_add(secs)) {
            candidates.push(Effective {
                at: t,
                binding: Binding::MaxAge,
            });
        }
    }
    candidates.into_iter().min_by_key(|e| e.at)
}

/// What the latest check concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Valid and usable for WhatsApp.
    Healthy,
    /// Valid, but it cannot do the job (a scope, the WABA or the phone number is missing).
    Unusable {
        /// Why, in plain words.
        reason: String,
    },
    /// Meta says the token is invalid.
    Dead {
        /// Why, in plain words.
        reason: String,
        /// Whether the reason is expiry (code 190/463).
        expired: bool,
    },
    /// Meta refused tokenwarden's own app credentials (the `[meta]` app's secret, wrong or
    /// reset): nothing is known about the token. The trouble is the app's, told once per app
    /// ([`crate::appcreds`]), not once per token.
    OwnCredentials {
        /// Meta's answer.
        detail: String,
    },
    /// Meta refused to inspect this token with tokenwarden's app while the app's own
    /// credentials work: the token belongs to another app (or `[meta]` names the wrong app).
    /// This token's trouble, told for this token.
    OtherApp {
        /// Meta's answer.
        detail: String,
    },
    /// The token could not be read from its store (missing, unreadable).
    StoreProblem {
        /// What is wrong.
        detail: String,
    },
    /// Graph or the store could not be reached this time.
    Unreachable {
        /// What failed.
        detail: String,
    },
    /// Meta throttled the calls (an app quota, a business-use-case limit): nothing is known
    /// about the token, and asking again before access returns only burns more quota. The
    /// daemon defers the token's check by `retry_after_secs` (Meta's
    /// `estimated_time_to_regain_access`), or to its next scheduled check when Meta gave none.
    Throttled {
        /// How long Meta said access takes to return.
        retry_after_secs: Option<u64>,
        /// Meta's answer.
        detail: String,
    },
}

/// A token's state as `status` shows it and as the subject line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Nothing to do.
    Ok,
    /// A threshold has been crossed.
    Warning {
        /// The threshold, in seconds before the effective expiry.
        threshold_secs: u64,
    },
    /// Within the last threshold, overdue for rotation, or unusable.
    Critical,
    /// Past its expiry.
    Expired,
    /// Meta says it is invalid.
    Invalid,
    /// tokenwarden cannot tell (Graph unreachable, its own credentials refused, no token).
    Unknown,
}

impl State {
    /// Upper-case word for subjects and `status`.
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning { .. } => "WARNING",
            State::Critical => "CRITICAL",
            State::Expired => "EXPIRED",
            State::Invalid => "INVALID",
            State::Unknown => "UNKNOWN",
        }
    }

    /// The monitoring-plugin exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub fn plugin_code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning { .. } => 1,
            State::Critical | State::Expired | State::Invalid => 2,
            State::Unknown => 3,
        }
    }
}

/// Something on-call may need to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Condition {
    /// A warning threshold was crossed (seconds before the effective expiry).
    Threshold(u64),
    /// Within the last threshold, or overdue for rotation.
    Critical,
    /// Past the effective expiry, or Meta says expired.
    Expired,
    /// Meta says the token is invalid.
    Invalid,
    /// Valid but cannot do the job.
    Unusable,
    /// Checks have failed transiently for longer than `cannot_check_after`.
    CannotCheck,
    /// Meta will not inspect the token with tokenwarden's app: it belongs to another app.
    OtherApp,
    /// The token cannot be read from its store.
    StoreProblem,
}

impl Condition {
    /// Stable key for the ledger and email ids.
    pub fn key(self) -> String {
        match self {
            Condition::Threshold(s) => format!("warn-{s}s"),
            Condition::Critical => "critical".into(),
            Condition::Expired => "expired".into(),
            Condition::Invalid => "invalid".into(),
            Condition::Unusable => "unusable".into(),
            Condition::CannotCheck => "cannot-check".into(),
            Condition::OtherApp => "other-app".into(),
            Condition::StoreProblem => "store".into(),
        }
    }
}

/// The outcome of [`assess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The state to show.
    pub state: State,
    /// What is worth an email.
    pub conditions: Vec<Condition>,
    /// The effective expiry from the last known facts.
    pub effective: Option<Effective>,
    /// Whether the verdict is Meta's (or the store's) word on the token itself. Only such a
    /// check can end a condition: a timeout, a throttled call, an unreadable store or
    /// tokenwarden's own app refused learn nothing, so they never send a recovery.
    pub settled: bool,
}

/// Where the effective expiry stands against the thresholds.
fn expiry_level(
    eff: Option<Effective>,
    policy: &Policy,
    now: Timestamp,
) -> (State, Option<Condition>) {
    let Some(eff) = eff else {
        return (State::Ok, None);
    };
    let left = eff.at.as_second() - now.as_second();
    if left <= 0 {
        // Past the rotation period the token still works: urgent, not expired.
        return match eff.binding {
            Binding::MaxAge => (State::Critical, Some(Condition::Critical)),
            _ => (State::Expired, Some(Condition::Expired)),
        };
    }
    let left = left as u64;
    let mut ascending: Vec<u64> = policy.thresholds.iter().map(Duration::as_secs).collect();
    ascending.sort_unstable();
    match ascending.first() {
        Some(&last) if left <= last => (State::Critical, Some(Condition::Critical)),
        _ => match ascending.iter().find(|&&t| left <= t) {
            Some(&t) => (
                State::Warning { threshold_secs: t },
                Some(Condition::Threshold(t)),
            ),
            None => (State::Ok, None),
        },
    }
}

/// The state and the conditions worth an email.
///
/// `facts` are the last known facts (possibly from an earlier check when this one failed);
/// `failing_since` is when the current streak of transient failures began.
pub fn assess(
    verdict: &Verdict,
    facts: Option<&TokenFacts>,
    failing_since: Option<Timestamp>,
    policy: &Policy,
    now: Timestamp,
) -> Assessment {
    let effective = facts.and_then(|f| effective_expiry(f, policy.max_age));
    let (level, level_cond) = expiry_level(effective, policy, now);
    let mut conditions: Vec<Condition> = Vec::new();
    let state = match verdict {
        Verdict::Healthy => {
            conditions.extend(level_cond);
            level
        }
        Verdict::Dead { expired: true, .. } => {
            conditions.push(Condition::Expired);
            State::Expired
        }
        Verdict::Dead { .. } => {
            conditions.push(Condition::Invalid);
            State::Invalid
        }
        Verdict::Unusable { .. } => {
            conditions.push(Condition::Unusable);
            conditions.extend(level_cond);
            worst(State::Critical, level)
        }
        Verdict::StoreProblem { .. } => {
            conditions.push(Condition::StoreProblem);
            State::Unknown
        }
        Verdict::OtherApp { .. } => {
            conditions.push(Condition::OtherApp);
            conditions.extend(level_cond);
            worst(State::Unknown, level)
        }
        Verdict::OwnCredentials { .. } => {
            // Nothing new is known about the token, but its known expiry still approaches.
            // The refused app is told about once, for the app (`crate::appcreds`).
            conditions.extend(level_cond);
            worst(State::Unknown, level)
        }
        Verdict::Unreachable { .. } | Verdict::Throttled { .. } => {
            let persisted = failing_since.is_some_and(|s| {
                now.as_second() - s.as_second() >= policy.cannot_check_after.as_secs() as i64
            });
            conditions.extend(level_cond);
            if persisted {
                conditions.push(Condition::CannotCheck);
                worst(State::Unknown, level)
            } else if facts.is_some() {
                level
            } else {
                State::Unknown
            }
        }
    };
    conditions.sort();
    conditions.dedup();
    let settled = !matches!(
        verdict,
        Verdict::Unreachable { .. }
            | Verdict::Throttled { .. }
            | Verdict::StoreProblem { .. }
            | Verdict::OwnCredentials { .. }
    );
    Assessment {
        state,
        conditions,
        effective,
        settled,
    }
}

/// The more severe of two states (for display); Unknown ranks below the token's known trouble.
fn worst(a: State, b: State) -> State {
    fn rank(s: State) -> u8 {
        match s {
            State::Ok => 0,
            State::Warning { .. } => 1,
            State::Unknown => 2,
            State::Critical => 3,
            State::Invalid => 4,
            State::Expired => 5,
        }
    }
    if rank(a) >= rank(b) { a } else { b }
}

/// What has been emailed about one token. Persisted in the state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The token version the threshold marks belong to.
    pub fingerprint: Option<Fingerprint>,
    /// Thresholds (seconds) already emailed, or passed over, for this version.
    pub thresholds_sent: Vec<u64>,
    /// Repeating conditions currently active, by key.
    pub repeating: BTreeMap<String, Repeat>,
    /// An alert was sent and no recovery yet.
    pub unresolved: bool,
    /// Recovery emails sent so far (numbers their ids).
    pub recoveries: u32,
}

/// Bookkeeping of a repeating condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repeat {
    /// First email.
    pub first: Timestamp,
    /// Latest email.
    pub last: Timestamp,
    /// Emails so far.
    pub count: u32,
}

/// An email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about (`None` for a recovery).
    pub condition: Option<Condition>,
    /// A key unique for this email of this token, stable across a crash and a re-decision:
    /// the outbox uses it to never queue the same email twice.
    pub key: String,
    /// 1 for the first email of a repeating condition, 2 for the first repeat, ...
    pub occurrence: u32,
}

/// Decides the emails to send now and the ledger after sending them, from the assessment
/// `a`. A condition ends (and a recovery is sent) only on a settled assessment.
pub fn decide(
    ledger: &Ledger,
    a: &Assessment,
    fingerprint: Option<Fingerprint>,
    policy: &Policy,
    now: Timestamp,
) -> (Vec<Notice>, Ledger) {
    let mut l = ledger.clone();
    let fp_text = fingerprint.map_or_else(|| "none".to_string(), |f| f.to_string());
    if fingerprint.is_some() && l.fingerprint != fingerprint {
        // A new token version starts with a clean slate: its own thresholds, its own repeats.
        l.fingerprint = fingerprint;
        l.thresholds_sent.clear();
        l.repeating.clear();
    }
    let conditions = &a.conditions;
    let mut notices = Vec::new();
    for &c in conditions {
        match c {
            Condition::Threshold(t) => {
                if !l.thresholds_sent.contains(&t) {
                    notices.push(Notice {
                        condition: Some(c),
                        key: format!("{}-{fp_text}", c.key()),
                        occurrence: 1,
                    });
                }
                // Longer thresholds are passed over: after a gap (the daemon was down) only
                // the threshold that applies now is emailed, never a stale one.
                for &other in policy
                    .thresholds
                    .iter()
                    .map(Duration::as_secs)
                    .collect::<Vec<_>>()
                    .iter()
                {
                    if other >= t && !l.thresholds_sent.contains(&other) {
                        l.thresholds_sent.push(other);
                    }
                }
                l.thresholds_sent.sort_unstable();
            }
            _ => {
                let key = c.key();
                let due = match l.repeating.get(&key) {
                    None => Some(1),
                    Some(r)
                        if now.as_second() - r.last.as_second()
                            >= policy.repeat_interval.as_secs() as i64 =>
                    {
                        Some(r.count + 1)
                    }
                    Some(_) => None,
                };
                if let Some(occurrence) = due {
                    notices.push(Notice {
                        condition: Some(c),
                        key: format!("{key}-{fp_text}-{occurrence}"),
                        occurrence,
                    });
                    let first = l.repeating.get(&key).map_or(now, |r| r.first);
                    l.repeating.insert(
                        key,
                        Repeat {
                            first,
                            last: now,
                            count: occurrence,
                        },
                    );
                }
            }
        }
    }
    if a.settled {
        // Only Meta's word on the token ends a condition; a check that learned nothing
        // keeps the repeats (an invalid token stays invalid through a timeout).
        let active: Vec<String> = conditions.iter().map(|c| c.key()).collect();
        l.repeating.retain(|k, _| active.contains(k));
    }
    if !notices.is_empty() {
        l.unresolved = true;
    }
    if a.settled && conditions.is_empty() && ledger.unresolved {
        l.unresolved = false;
        l.recoveries += 1;
        notices.push(Notice {
            condition: None,
            key: format!("recovery-{}", l.recoveries),
            occurrence: 1,
        });
    }
    (notices, l)
}

/// The next moment at which [`assess`] or [`decide`] could give a different answer without a
/// new check: a threshold or the deadline being crossed, a repeat falling due, a transient
/// streak reaching `cannot_check_after`. The daemon wakes then, so no alert waits for the next
/// scheduled check.
pub fn next_change(
    facts: Option<&TokenFacts>,
    ledger: &Ledger,
    failing_since: Option<Timestamp>,
    policy: &Policy,
    now: Timestamp,
) -> Option<Timestamp> {
    let now_s = now.as_second();
    let mut times: Vec<i64> = Vec::new();
    if let Some(e) = facts.and_then(|f| effective_expiry(f, policy.max_age)) {
        times.push(e.at.as_second());
        times.extend(
            policy
                .thresholds
                .iter()
                .map(|t| e.at.as_second() - t.as_secs() as i64),
        );
    }
    let repeat = policy.repeat_interval.as_secs() as i64;
    times.extend(
        ledger
            .repeating
            .values()
            .map(|r| r.last.as_second() + repeat),
    );
    if let Some(s) = failing_since {
        times.push(s.as_second() + policy.cannot_check_after.as_secs() as i64);
    }
    times
        .into_iter()
        .filter(|&t| t > now_s)
        .min()
        .and_then(|t| Timestamp::from_second(t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_790_000_000;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::of(s)
    }

    fn facts(
        expires: Expires,
        issued: Option<i64>,
        data_access: Option<i64>,
        kind: &str,
    ) -> TokenFacts {
        TokenFacts {
            fingerprint: fp("v1"),
            app_id: Some("1".into()),
            application: None,
            token_type: Some(kind.into()),
            expires,
            data_access_expires_at: data_access.map(ts),
            issued_at: issued.map(ts),
            scopes: vec![],
            wabas: vec![],
        }
    }

    #[test]
    fn effective_expiry_is_the_earliest_limit() {
        let age = Some(Duration::from_secs(60 * DAY as u64));
        // Never-expiring system-user token: the rotation period binds.
        let f = facts(Expires::Never, Some(T0), None, "SYSTEM_USER");
        assert_eq!(
            effective_expiry(&f, age),
            Some(Effective {
                at: ts(T0 + 60 * DAY),
                binding: Binding::MaxAge
            })
        );
        // expires_at 0 and no issued_at: nothing known.
        assert_eq!(
            effective_expiry(&facts(Expires::Never, None, None, "SYSTEM_USER"), age),
            None
        );
        // A 60-day token expiring before max_age: Meta's expiry binds.
        let f = facts(
            Expires::At(ts(T0 + 59 * DAY)),
            Some(T0),
            None,
            "SYSTEM_USER",
        );
        assert_eq!(effective_expiry(&f, age).unwrap().binding, Binding::Expiry);
        // Extended user token: expires_at 0 but data access lapses.
        let f = facts(Expires::Never, Some(T0), Some(T0 + 30 * DAY), "USER");
        assert_eq!(
            effective_expiry(&f, age),
            Some(Effective {
                at: ts(T0 + 30 * DAY),
                binding: Binding::DataAccess
            })
        );
        // No max_age configured: a never-expiring token has no effective expiry.
        assert_eq!(
            effective_expiry(&facts(Expires::Never, Some(T0), None, "SYSTEM_USER"), None),
            None
        );
    }

    /// Every state and boundary: (seconds before expiry, expected state).
    #[test]
    fn states_at_every_boundary() {
        let p = Policy::default();
        let exp = T0 + 100 * DAY;
        let f = facts(
            Expires::At(ts(exp)),
            Some(exp - 50 * DAY),
            None,
            "SYSTEM_USER",
        );
        let p = Policy { max_age: None, ..p };
        let w = |d: i64| State::Warning {
            threshold_secs: (d * DAY) as u64,
        };
        let rows: &[(i64, State)] = &[
            (15 * DAY, State::Ok),
            (14 * DAY + 1, State::Ok),
            (14 * DAY, w(14)), // exactly at a threshold: crossed
            (14 * DAY - 1, w(14)),
            (7 * DAY + 1, w(14)),
            (7 * DAY, w(7)),
            (3 * DAY, w(3)),
            (3 * DAY - 1, w(3)),
            (DAY + 1, w(3)),
            (DAY, State::Critical),
            (1, State::Critical),
            (0, State::Expired),
            (-5 * DAY, State::Expired),
        ];
        for &(left, want) in rows {
            let a = assess(&Verdict::Healthy, Some(&f), None, &p, ts(exp - left));
            assert_eq!(a.state, want, "{left} s before expiry");
        }
    }

    #[test]
    fn clock_before_issue_and_missing_issue_time_are_handled() {
        let p = Policy::default();
        // The clock is earlier than issued_at (a skewed host): the token is simply far from expiry.
        let f = facts(
            Expires::At(ts(T0 + 60 * DAY)),
            Some(T0),
            None,
            "SYSTEM_USER",
        );
        assert_eq!(
            assess(&Verdict::Healthy, Some(&f), None, &p, ts(T0 - 10 * DAY)).state,
            State::Ok
        );
        // No issued_at: only Meta's expiry counts.
        let f = facts(Expires::At(ts(T0 + 2 * DAY)), None, None, "SYSTEM_USER");
        assert_eq!(
            assess(&Verdict::Healthy, Some(&f), None, &p, ts(T0)).state,
            State::Warning {
                threshold_secs: 3 * DAY as u64
            }
        );
        // Overdue for rotation (max_age passed) on a never-expiring token: critical, not expired.
        let f = facts(Expires::Never, Some(T0), None, "SYSTEM_USER");
        let a = assess(&Verdict::Healthy, Some(&f), None, &p, ts(T0 + 61 * DAY));
        assert_eq!(
            (a.state, a.conditions),
            (State::Critical, vec![Condition::Critical])
        );
    }

    #[test]
    fn verdicts_map_to_states_and_conditions() {
        let p = Policy::default();
        let f = facts(
            Expires::At(ts(T0 + 30 * DAY)),
            Some(T0),
            None,
            "SYSTEM_USER",
        );
        let now = ts(T0 + DAY);
        let a = |v: Verdict, since: Option<i64>| assess(&v, Some(&f), since.map(ts), &p, now);
        assert_eq!(a(Verdict::Healthy, None).conditions, vec![]);
        assert_eq!(
            a(
                Verdict::Dead {
                    reason: "x".into(),
                    expired: true
                },
                None
            )
            .state,
            State::Expired
        );
        assert_eq!(
            a(
                Verdict::Dead {
                    reason: "x".into(),
                    expired: false
                },
                None
            )
            .conditions,
            vec![Condition::Invalid]
        );
        assert_eq!(
            a(Verdict::Unusable { reason: "x".into() }, None).state,
            State::Critical
        );
        assert_eq!(
            a(Verdict::OwnCredentials { detail: "x".into() }, None).conditions,
            vec![]
        );
        assert_eq!(
            a(Verdict::OtherApp { detail: "x".into() }, None).conditions,
            vec![Condition::OtherApp]
        );
        assert_eq!(
            a(Verdict::StoreProblem { detail: "x".into() }, None).state,
            State::Unknown
        );
        // A single transient failure: no alert, the known state stands.
        let one = a(
            Verdict::Unreachable { detail: "x".into() },
            Some(T0 + DAY - 60),
        );
        assert_eq!((one.state, one.conditions), (State::Ok, vec![]));
        // Persisting past cannot_check_after: "cannot check", never "invalid".
        let long = a(
            Verdict::Unreachable { detail: "x".into() },
            Some(T0 + DAY - 6 * 3600),
        );
        assert_eq!(
            (long.state, long.conditions),
            (State::Unknown, vec![Condition::CannotCheck])
        );
        // Unreachable with no facts at all: unknown, and still no alert until it persists.
        let none = assess(
            &Verdict::Unreachable { detail: "x".into() },
            None,
            Some(now),
            &p,
            now,
        );
        assert_eq!((none.state, none.conditions), (State::Unknown, vec![]));
    }

    #[test]
    fn thresholds_are_crossed_by_wall_clock_while_graph_is_down() {
        let p = Policy::default();
        let f = facts(
            Expires::At(ts(T0 + 10 * DAY)),
            Some(T0 - 50 * DAY),
            None,
            "SYSTEM_USER",
        );
        let a = assess(
            &Verdict::Unreachable { detail: "x".into() },
            Some(&f),
            Some(ts(T0 + 9 * DAY)),
            &p,
            ts(T0 + 9 * DAY + 60),
        );
        assert!(a.conditions.contains(&Condition::Critical), "{a:?}");
    }

    /// Steps a token through its life and checks each email is sent exactly once.
    #[test]
    fn each_threshold_once_criticals_repeat_and_one_recovery() {
        let p = Policy::default();
        let exp = T0 + 20 * DAY;
        let f = facts(
            Expires::At(ts(exp)),
            Some(exp - 60 * DAY),
            None,
            "SYSTEM_USER",
        );
        let mut ledger = Ledger::default();
        let mut sent: Vec<String> = Vec::new();
        let step = |now: i64, verdict: Verdict, facts: &TokenFacts, ledger: &mut Ledger| {
            let a = assess(&verdict, Some(facts), None, &p, ts(now));
            let (notices, next) = decide(ledger, &a, Some(facts.fingerprint), &p, ts(now));
            *ledger = next;
            notices.into_iter().map(|n| n.key).collect::<Vec<_>>()
        };
        for left_days in [15, 14, 13, 7, 6, 3] {
            sent.extend(step(
                exp - left_days * DAY,
                Verdict::Healthy,
                &f,
                &mut ledger,
            ));
        }
        let v1 = fp("v1");
        assert_eq!(
            sent,
            vec![
                format!("warn-{}s-{v1}", 14 * DAY),
                format!("warn-{}s-{v1}", 7 * DAY),
                format!("warn-{}s-{v1}", 3 * DAY)
            ]
        );
        // Critical: first at 1 day left, again only after repeat_interval.
        assert_eq!(
            step(exp - DAY, Verdict::Healthy, &f, &mut ledger),
            vec![format!("critical-{v1}-1")]
        );
        assert!(step(exp - DAY + 3600, Verdict::Healthy, &f, &mut ledger).is_empty());
        // Expired replaces critical; it repeats every 24 h.
        assert_eq!(
            step(exp + 10, Verdict::Healthy, &f, &mut ledger),
            vec![format!("expired-{v1}-1")]
        );
        assert!(step(exp + 20 * 3600, Verdict::Healthy, &f, &mut ledger).is_empty());
        assert_eq!(
            step(exp + 10 + DAY, Verdict::Healthy, &f, &mut ledger),
            vec![format!("expired-{v1}-2")]
        );
        // A new token version: healthy, one recovery email, and a clean slate.
        let mut f2 = facts(
            Expires::At(ts(exp + 60 * DAY)),
            Some(exp + DAY),
            None,
            "SYSTEM_USER",
        );
        f2.fingerprint = fp("v2");
        assert_eq!(
            step(exp + 2 * DAY, Verdict::Healthy, &f2, &mut ledger),
            vec!["recovery-1".to_string()]
        );
        assert!(step(exp + 3 * DAY, Verdict::Healthy, &f2, &mut ledger).is_empty());
        assert_eq!(ledger.fingerprint, Some(fp("v2")));
        assert!(ledger.thresholds_sent.is_empty());
    }

    /// A settled assessment with `conditions`, for the ledger's tests.
    fn of(conditions: &[Condition]) -> Assessment {
        Assessment {
            state: State::Ok,
            conditions: conditions.to_vec(),
            effective: None,
            settled: true,
        }
    }

    /// A check that learns nothing about the token (Graph timed out, the store could not be
    /// read, Meta refused tokenwarden's own app) never ends its alert: an invalid token must
    /// not be called RESOLVED because the next check timed out.
    #[test]
    fn a_check_that_learns_nothing_sends_no_recovery() {
        let p = Policy::default();
        let f = facts(
            Expires::At(ts(T0 + 40 * DAY)),
            Some(T0 - 20 * DAY),
            None,
            "SYSTEM_USER",
        );
        let dead = Verdict::Dead {
            reason: "x".into(),
            expired: false,
        };
        let a = assess(&dead, Some(&f), None, &p, ts(T0));
        let (sent, ledger) = decide(&Ledger::default(), &a, Some(f.fingerprint), &p, ts(T0));
        assert_eq!(sent.len(), 1);
        for v in [
            Verdict::Unreachable { detail: "x".into() },
            Verdict::Throttled {
                retry_after_secs: None,
                detail: "x".into(),
            },
            Verdict::StoreProblem { detail: "x".into() },
            Verdict::OwnCredentials { detail: "x".into() },
        ] {
            let a = assess(&v, Some(&f), Some(ts(T0 + 60)), &p, ts(T0 + 60));
            let (notices, l) = decide(&ledger, &a, Some(f.fingerprint), &p, ts(T0 + 60));
            assert!(
                notices.iter().all(|n| n.condition.is_some()),
                "{v:?} sent a recovery: {notices:?}"
            );
            assert!(l.unresolved, "{v:?}");
            // The invalid token's repeat is kept, not started over at the next real answer.
            assert!(l.repeating.contains_key("invalid"), "{v:?}");
        }
        // The token answers again, healthy: now the recovery.
        let a = assess(&Verdict::Healthy, Some(&f), None, &p, ts(T0 + 120));
        let (notices, _) = decide(&ledger, &a, Some(f.fingerprint), &p, ts(T0 + 120));
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].condition, None);
    }

    #[test]
    fn a_gap_sends_only_the_threshold_that_applies_now() {
        let p = Policy::default();
        let (notices, l) = decide(
            &Ledger::default(),
            &of(&[Condition::Threshold(3 * DAY as u64)]),
            Some(fp("v")),
            &p,
            ts(T0),
        );
        assert_eq!(notices.len(), 1);
        assert_eq!(
            l.thresholds_sent,
            vec![3 * DAY as u64, 7 * DAY as u64, 14 * DAY as u64]
        );
        let (again, _) = decide(
            &l,
            &of(&[Condition::Threshold(7 * DAY as u64)]),
            Some(fp("v")),
            &p,
            ts(T0),
        );
        assert!(
            again.is_empty(),
            "a longer threshold after a shorter one is never sent"
        );
    }

    #[test]
    fn keys_are_stable_so_a_redecision_after_a_crash_queues_the_same_email() {
        let p = Policy::default();
        let l = Ledger::default();
        let a = decide(&l, &of(&[Condition::Invalid]), Some(fp("v")), &p, ts(T0));
        let b = decide(
            &l,
            &of(&[Condition::Invalid]),
            Some(fp("v")),
            &p,
            ts(T0 + 30),
        );
        assert_eq!(a.0, b.0);
    }

    #[test]
    fn next_change_is_the_nearest_crossing() {
        let p = Policy {
            max_age: None,
            ..Policy::default()
        };
        let f = facts(
            Expires::At(ts(T0 + 10 * DAY)),
            Some(T0 - 50 * DAY),
            None,
            "SYSTEM_USER",
        );
        // 10 days left: the 7-day threshold is next.
        assert_eq!(
            next_change(Some(&f), &Ledger::default(), None, &p, ts(T0)),
            Some(ts(T0 + 3 * DAY))
        );
        // A repeat due sooner wins; so does the end of a transient grace period.
        let mut l = Ledger::default();
        l.repeating.insert(
            "x".into(),
            Repeat {
                first: ts(T0),
                last: ts(T0 - DAY + 60),
                count: 1,
            },
        );
        assert_eq!(
            next_change(Some(&f), &l, None, &p, ts(T0)),
            Some(ts(T0 + 60))
        );
        assert_eq!(
            next_change(
                Some(&f),
                &Ledger::default(),
                Some(ts(T0 - 6 * 3600 + 5)),
                &p,
                ts(T0)
            ),
            Some(ts(T0 + 5))
        );
        // Past everything: nothing to wait for.
        assert_eq!(
            next_change(Some(&f), &Ledger::default(), None, &p, ts(T0 + 11 * DAY)),
            None
        );
    }

    #[test]
    fn plugin_codes() {
        assert_eq!(State::Ok.plugin_code(), 0);
        assert_eq!(State::Warning { threshold_secs: 1 }.plugin_code(), 1);
        assert_eq!(State::Expired.plugin_code(), 2);
        assert_eq!(State::Unknown.plugin_code(), 3);
    }
}
