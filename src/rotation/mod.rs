//! Rotation: replacing a token with a validated successor, without a moment on no working token.
//!
//! Pure: no IO; `now` is an argument. The steps follow Secrets Manager's rotation protocol:
//! **obtain** a candidate (staged by a person, refreshed, or minted) and stage it as
//! `AWSPENDING`; **validate** it against Meta; **deliver** it to every environment; **promote**
//! it to `AWSCURRENT` (the old version becomes `AWSPREVIOUS`); after the grace period **revoke**
//! the old token and **verify** that Meta now calls it invalid.
//!
//! A [`Rotation`] record holds where a rotation stands. [`next`] says what to do with it;
//! [`apply`] moves it on from what happened. The runner ([`run`]) saves the record after
//! every step, so a process killed anywhere resumes the same rotation: the record's id is the
//! store's request token for the candidate, so a resumed obtain finds the candidate it already
//! staged instead of making a second one. [`rotate_at`] and [`judge`] hold the two decisions
//! that are policy: when to rotate, and whether a candidate may be trusted.

pub mod command;
pub mod run;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::policy::{Effective, Expires, TokenFacts, effective_expiry};
use crate::secret::Fingerprint;
use crate::usable::Usability;

/// How long before the effective expiry a rotation is due at the latest.
pub const MIN_LEAD: Duration = Duration::from_secs(7 * 86_400);

/// The token type tokenwarden expects of a successor (the runbook's "prefer system-user
/// tokens"); a successor of the same type as the current token is also accepted.
pub const SYSTEM_USER: &str = "SYSTEM_USER";

/// When a token with the `effective` expiry should be replaced. `rotate_before` from the config
/// wins; otherwise a third of the token's lifetime before the end, and never later than
/// [`MIN_LEAD`] before it (a 60-day token rotates at day 40; a short-lived one at once).
pub fn rotate_at(
    effective: &Effective,
    issued_at: Option<Timestamp>,
    rotate_before: Option<Duration>,
) -> Timestamp {
    let lead = match rotate_before {
        Some(d) => d.as_secs() as i64,
        None => {
            let third = issued_at
                .map(|i| (effective.at.as_second() - i.as_second()).max(0) / 3)
                .unwrap_or(0);
            third.max(MIN_LEAD.as_secs() as i64)
        }
    };
    Timestamp::from_second(effective.at.as_second().saturating_sub(lead))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// When a rotation of a token with these facts becomes due, or `None` when it never does.
pub fn due_at(t: &crate::config::TokenConfig, facts: &TokenFacts) -> Option<Timestamp> {
    // A kind `debug_token` cannot inspect (Instagram, Threads) has a known expiry only once
    // tokenwarden renewed it: until then the renewal is due at once, because it is what
    // teaches the expiry, and such a token cannot be refreshed once it expired.
    // Whatever the rotation period says: with `max_age` (the default) and no issue time known,
    // the period gave no time at all, and such a token was never renewed, expiring unwarned.
    if !t.kind.debug_token() && facts.expires == Expires::Unknown {
        return Some(Timestamp::UNIX_EPOCH);
    }
    let eff = effective_expiry(facts, t.policy.max_age)?;
    Some(rotate_at(&eff, facts.issued_at, t.rotation.rotate_before))
}

/// The rotation settings of `t` that decide how a successor is obtained (source, and for
/// minting the system user, lifetime and scopes), as one comparable string without secrets.
pub fn settings_key(t: &crate::config::TokenConfig) -> String {
    match &t.rotation.source {
        crate::config::Source::Mint(m) => format!(
            "mint/{}/{}/{}",
            m.system_user_id,
            if m.expiring { "60d" } else { "never" },
            m.scopes.join(",")
        ),
        s => s.word().to_string(),
    }
}

/// Whether the token's last known facts make its configured source impossible: refreshing a
/// non-expiring token would trade it for a 60-day one. Returns the problem in words.
pub fn source_conflict(
    t: &crate::config::TokenConfig,
    facts: Option<&TokenFacts>,
) -> Option<String> {
    match (&t.rotation.source, facts.map(|f| f.expires)) {
        // A Page token never expires and is renewed by taking it again, not by refresh; a
        // business token is fetched again for its customer (`fetch_only`), never traded.
        (crate::config::Source::Refresh, Some(Expires::Never))
            if !matches!(
                t.kind,
                crate::config::Kind::Page | crate::config::Kind::WhatsappBusiness
            ) =>
        {
            Some(format!(
                "token `{}` never expires (last check), but source = \"refresh\" would trade it for a 60-day token; use source = \"mint\" with lifetime = \"never\", or source = \"staged\"",
                t.name
            ))
        }
        _ => None,
    }
}

/// Why a rotation of `t` should start now, or `None`. Due when the token is dead or unusable
/// (a successor is the fix), or when its rotation time has come. Never on a failed check, a
/// store problem or tokenwarden's own credentials: those are not the token's fault. After an
/// automatic rotation failed, the next attempt waits `repeat_interval` (a staged source needs
/// no wait: the rejected candidate was unstaged, so only a new one starts a rotation).
pub fn start_reason(
    t: &crate::config::TokenConfig,
    ts: &crate::state::TokenState,
    last: Option<&Rotation>,
    now: Timestamp,
) -> Option<String> {
    let facts = ts.facts.as_ref()?;
    let reason = match ts.verdict.as_ref()? {
        crate::policy::Verdict::Dead { reason, .. } => {
            format!("the current token is no longer valid ({reason})")
        }
        // A Marketing token is unusable for a missing ads scope or an ad account that is not
        // running, a business token when the customer disconnected: a successor would be
        // too, so a person is told (the UNUSABLE email) and nothing is rotated in a loop.
        crate::policy::Verdict::Unusable { .. } if !t.kind.rotates_when_unusable() => {
            return None;
        }
        crate::policy::Verdict::Unusable { reason } => {
            format!("the current token is unusable ({reason})")
        }
        crate::policy::Verdict::Healthy => {
            let at = due_at(t, facts)?;
            if at > now {
                return None;
            }
            if handed_back(last, facts, t.policy.repeat_interval, now) {
                return None;
            }
            format!("its rotation time {} has come", crate::timefmt::utc(at))
        }
        _ => return None,
    };
    // A failure only the config can fix (a business that refuses non-expiring tokens) is
    // not tried again, every `repeat_interval`, until the rotation settings change.
    // Once they have changed, the operator's fix is tried at once.
    if let Some(needs) = last.and_then(|l| l.needs_config_change.as_deref()) {
        return (needs != settings_key(t)).then_some(reason);
    }
    if let Some(l) = last
        && matches!(
            l.outcome,
            Some(Outcome::Failed { .. } | Outcome::Rejected { .. })
        )
        && t.rotation.source != crate::config::Source::Staged
        && now.as_second() < l.updated.as_second() + t.policy.repeat_interval.as_secs() as i64
    {
        return None;
    }
    Some(reason)
}

/// Whether Meta already handed back this very token (the last rotation ended "extended in
/// place" for the version now current) and asking again now would only get it again. A
/// non-expiring token (a Tech Provider's business token from `fetch_only`, a Page token taken
/// again) is due only by the rotation period, which Meta's answer does not reset: it is not
/// asked again for this version (its EXTENDED email said so, and the period's own warnings
/// still come). An expiring one is asked again a `repeat_interval` later, when Meta may extend
/// it.
fn handed_back(
    last: Option<&Rotation>,
    facts: &TokenFacts,
    repeat_interval: Duration,
    now: Timestamp,
) -> bool {
    let Some(l) = last.filter(|l| {
        matches!(l.outcome, Some(Outcome::Extended { .. }))
            && l.old.fingerprint == facts.fingerprint
    }) else {
        return false;
    };
    facts.expires == Expires::Never
        || now.as_second() < l.updated.as_second() + repeat_interval.as_secs() as i64
}

/// One step of a rotation: work still to do. A finished rotation has no step
/// ([`Progress::Finished`]), so nothing that expects a step to run can be handed "finished".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Get a candidate into the store as `AWSPENDING`.
    Obtain,
    /// Check the candidate with Meta.
    Validate,
    /// Push it to every environment.
    Deliver,
    /// Move `AWSCURRENT` to it.
    Promote,
    /// Revoke the old token once the grace period is over.
    Revoke,
    /// Confirm Meta now calls the old token invalid.
    VerifyRevoked,
}

impl Step {
    /// The step's name in logs, the audit log and failpoints.
    pub fn word(self) -> &'static str {
        match self {
            Step::Obtain => "obtain",
            Step::Validate => "validate",
            Step::Deliver => "deliver",
            Step::Promote => "promote",
            Step::Revoke => "revoke",
            Step::VerifyRevoked => "verify_revoked",
        }
    }
}

/// Where a rotation stands: a step to run next, or finished (see the outcome). Saved in the
/// record's `step` field as the step's word, or `"finished"`, as before there was this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This step runs next.
    Next(Step),
    /// Nothing left to do; see the outcome.
    Finished,
}

/// [`Progress::Finished`]'s word.
const FINISHED: &str = "finished";

impl Progress {
    /// The word in logs and the audit log: the step's, or `finished`.
    pub fn word(self) -> &'static str {
        match self {
            Progress::Next(s) => s.word(),
            Progress::Finished => FINISHED,
        }
    }
}

impl From<Step> for Progress {
    fn from(s: Step) -> Progress {
        Progress::Next(s)
    }
}

impl Serialize for Progress {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Progress::Next(step) => step.serialize(ser),
            Progress::Finished => ser.serialize_str(FINISHED),
        }
    }
}

impl<'de> Deserialize<'de> for Progress {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Progress, D::Error> {
        let word = String::deserialize(de)?;
        if word == FINISHED {
            return Ok(Progress::Finished);
        }
        let step = serde::de::IntoDeserializer::<D::Error>::into_deserializer(word.as_str());
        Step::deserialize(step).map(Progress::Next)
    }
}

/// Where a rotation's candidate came from. Saved as `staged`, `refresh` or `mint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A person (or another instance) staged it in the store.
    Staged,
    /// Refreshed through Meta from the current token.
    Refresh,
    /// Minted for the system user.
    Mint,
}

impl Origin {
    /// The word in the record, logs, the audit log and emails.
    pub fn word(self) -> &'static str {
        match self {
            Origin::Staged => "staged",
            Origin::Refresh => "refresh",
            Origin::Mint => "mint",
        }
    }
}

impl From<&crate::config::Source> for Origin {
    fn from(s: &crate::config::Source) -> Origin {
        match s {
            crate::config::Source::Staged => Origin::Staged,
            crate::config::Source::Refresh => Origin::Refresh,
            crate::config::Source::Mint(_) => Origin::Mint,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// How a finished rotation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The successor is current; the old token was revoked (or is kept, with `revoke_after =
    /// "never"`).
    Completed {
        /// Whether the old token was revoked and verified invalid.
        revoked: bool,
    },
    /// The candidate failed a check; it was not promoted and the old token is untouched.
    Rejected {
        /// Which check failed, in words.
        check: String,
    },
    /// A step failed for good. Before promotion the old token stays current; after it, the
    /// new one is current and only the retirement of the old one is left to a person.
    Failed {
        /// The step that failed.
        step: Step,
        /// Why, in words.
        reason: String,
    },
    /// Someone else (another tokenwarden, a person) promoted a different version first; this
    /// rotation stopped without changing anything.
    Superseded {
        /// What was found.
        detail: String,
    },
    /// Meta handed back the current token itself, living longer (a refresh can return the
    /// same string): nothing to promote, deliver or revoke; the token stays current.
    Extended {
        /// The token's new expiry, when Meta said (`None`: never, or unknown).
        until: Option<Timestamp>,
    },
}

/// One side of a rotation: a store version and its fingerprint (never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// The store's version id.
    pub version: String,
    /// The token's fingerprint.
    pub fingerprint: Fingerprint,
}

/// Where one rotation stands. Saved after every step; holds no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotation {
    /// Unique id, also the store request token for the candidate (32 to 64 characters).
    pub id: String,
    /// The token's name.
    pub token: String,
    /// Where the candidate came from.
    pub source: Origin,
    /// Why it started, in words.
    pub reason: String,
    /// When it started.
    pub started: Timestamp,
    /// When it last moved.
    pub updated: Timestamp,
    /// The token being replaced.
    pub old: Side,
    /// The candidate, once obtained.
    pub new: Option<Side>,
    /// What Meta said about the candidate, once validated.
    pub new_facts: Option<TokenFacts>,
    /// The step to run next, or finished.
    pub step: Progress,
    /// Whether a refresh or mint call was sent for this rotation (a crash right after it may
    /// have left an unrecorded token at Meta; see ARCHITECTURE.md).
    #[serde(default)]
    pub obtain_sent: bool,
    /// When the candidate became current.
    pub promoted_at: Option<Timestamp>,
    /// When the old token is to be revoked (`None`: never).
    pub revoke_at: Option<Timestamp>,
    /// Consecutive transient failures of the current step.
    #[serde(default)]
    pub attempts: u32,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// Whether the last failure was a target refusing for good (a symlink, a file that is not
    /// UTF-8, a command exiting 1): retrying alone will not help, someone must fix the target
    /// (`rotate` exits 1 rather than 75). The rotation still resumes once it is fixed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_fix: bool,
    /// Set when finished.
    pub outcome: Option<Outcome>,
    /// Set when the failure can only be fixed in the config: the [`settings_key`] it failed
    /// with. No automatic rotation starts again until the settings differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_config_change: Option<String>,
    /// The dotenv `reload` commands this rotation ran, by target, saved before each starts
    /// and again when it exits. A reload that started and never finished (the process was
    /// killed while the command ran) runs again, with its verify, when the rotation resumes:
    /// the file already holds the candidate, but the application may not have read it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reloads: std::collections::BTreeMap<String, ReloadMark>,
}

/// One target's `reload` in a rotation record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadMark {
    /// When the command was started (last time).
    pub started: Timestamp,
    /// When it exited (whatever its status); `None` while it runs or after a kill.
    pub finished: Option<Timestamp>,
}

impl Rotation {
    /// A rotation of the token whose current version is `old`, starting at `step`
    /// ([`Step::Obtain`], or [`Step::Validate`] when the candidate is already staged).
    pub fn begin(
        id: String,
        token: &str,
        source: Origin,
        reason: String,
        old: Side,
        now: Timestamp,
    ) -> Rotation {
        Rotation {
            id,
            token: token.to_string(),
            source,
            reason,
            started: now,
            updated: now,
            old,
            new: None,
            new_facts: None,
            step: Progress::Next(Step::Obtain),
            obtain_sent: false,
            needs_config_change: None,
            promoted_at: None,
            revoke_at: None,
            attempts: 0,
            last_error: None,
            needs_fix: false,
            outcome: None,
            reloads: Default::default(),
        }
    }

    /// Whether the rotation still has work to do.
    pub fn is_active(&self) -> bool {
        self.step != Progress::Finished
    }
}

/// What the runner should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run this step now.
    Run(Step),
    /// Nothing until then (the grace period before revoking).
    WaitUntil(Timestamp),
    /// The rotation is finished.
    Done,
}

/// What to do with `r` at `now`.
pub fn next(r: &Rotation, now: Timestamp) -> Action {
    match r.step {
        Progress::Finished => Action::Done,
        Progress::Next(Step::Revoke) => match r.revoke_at {
            Some(at) if now < at => Action::WaitUntil(at),
            _ => Action::Run(Step::Revoke),
        },
        Progress::Next(s) => Action::Run(s),
    }
}

/// What happened when a step ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The candidate is staged in the store.
    Obtained(Side),
    /// Every check passed.
    Validated(TokenFacts),
    /// A check failed.
    Rejected(String),
    /// Every environment has the candidate.
    Delivered,
    /// `AWSCURRENT` is on the candidate.
    Promoted,
    /// Another version became current first.
    Superseded(String),
    /// Meta accepted the revoke (or the old token was already dead).
    Revoked,
    /// Meta calls the old token invalid.
    RevokeConfirmed,
    /// The step could not run this time; try again on a later run.
    Transient(String),
    /// A target failed during delivery; the old token was put back everywhere and the
    /// delivery is tried again on a later run.
    DeliveryFailed(String),
    /// Copies of the old token remain outside the targets; the revoke waits for them.
    CopiesRemain(String),
    /// The step failed for good.
    Failed(String),
    /// The successor Meta gave is the current token itself, with this new expiry.
    Extended(Option<Timestamp>),
}

/// Moves `r` on after `event`. `revoke_after` is the grace period set at promotion.
pub fn apply(r: &mut Rotation, event: Event, revoke_after: Option<Duration>, now: Timestamp) {
    // A finished rotation runs no step, so no event can come from one.
    let Progress::Next(step) = r.step else {
        return;
    };
    r.updated = now;
    let advance = |r: &mut Rotation, to: Step| {
        r.step = Progress::Next(to);
        r.attempts = 0;
        r.last_error = None;
    };
    match event {
        Event::Obtained(side) => {
            r.new = Some(side);
            advance(r, Step::Validate);
        }
        Event::Validated(facts) => {
            r.new_facts = Some(facts);
            advance(r, Step::Deliver);
        }
        Event::Delivered => advance(r, Step::Promote),
        Event::Promoted => {
            r.promoted_at = Some(now);
            match revoke_after {
                None => finish(r, Outcome::Completed { revoked: false }),
                Some(grace) => {
                    r.revoke_at = Timestamp::from_second(
                        now.as_second().saturating_add(grace.as_secs() as i64),
                    )
                    .ok();
                    advance(r, Step::Revoke);
                }
            }
        }
        Event::Revoked => advance(r, Step::VerifyRevoked),
        Event::RevokeConfirmed => finish(r, Outcome::Completed { revoked: true }),
        Event::Rejected(check) => finish(r, Outcome::Rejected { check }),
        Event::Superseded(detail) => finish(r, Outcome::Superseded { detail }),
        Event::Failed(reason) => finish(r, Outcome::Failed { step, reason }),
        Event::Extended(until) => finish(r, Outcome::Extended { until }),
        Event::Transient(reason) | Event::DeliveryFailed(reason) | Event::CopiesRemain(reason) => {
            r.attempts += 1;
            r.last_error = Some(reason);
        }
    }
}

fn finish(r: &mut Rotation, outcome: Outcome) {
    r.step = Progress::Finished;
    r.outcome = Some(outcome);
    r.attempts = 0;
}

/// What is expected of a successor.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The configured app, for kinds `debug_token` inspects (`None`: no app to compare).
    pub app_id: Option<&'a str>,
    /// The token type a successor should have ([`SYSTEM_USER`] for WhatsApp, the kind's own
    /// otherwise); one of the current token's type is also accepted.
    pub token_type: &'a str,
    /// The current token's facts, when known (for its type and lifetime).
    pub current: Option<&'a TokenFacts>,
    /// Whether Meta reports this kind's expiry on inspection (`debug_token`); when it does
    /// not, a candidate of unknown expiry is not compared with the current token.
    pub expiry_reported: bool,
    /// The policy's `max_age`, so "lives longer" compares effective expiries.
    pub max_age: Option<Duration>,
}

/// What Meta said about a candidate: `debug_token`'s verdict and facts, and what the one
/// usability rule ([`crate::usable::decide`]) made of its reads.
#[derive(Debug, Clone)]
pub struct CandidateReport {
    /// Why `debug_token` called it invalid, when it did.
    pub invalid: Option<String>,
    /// Its facts.
    pub facts: TokenFacts,
    /// Whether it can do the WhatsApp job (scopes, the WABA, the phone number), by the same
    /// rule as the daemon's check and `doctor`.
    pub usability: Usability,
}

/// Whether a candidate may replace the current token: valid, same app, a system-user token
/// (or the current token's type), usable for WhatsApp by the one rule of [`crate::usable`]
/// (scopes, the WABA, the phone number), no scope of the current token lost, and a later
/// effective expiry than the current token. Returns the first failed check in words, for the
/// on-call email.
pub fn judge(c: &CandidateReport, e: &Expectations<'_>) -> Result<(), String> {
    let f = &c.facts;
    if let Some(why) = &c.invalid {
        return Err(format!("Meta says the candidate is invalid: {why}"));
    }
    if let Some(cur) = e.current
        && cur.fingerprint == f.fingerprint
    {
        return Err("the candidate is the current token itself".into());
    }
    if let Some(app_id) = e.app_id
        && f.app_id.as_deref() != Some(app_id)
    {
        return Err(format!(
            "the candidate belongs to app {}, not to the configured app {app_id}",
            f.app_id.as_deref().unwrap_or("(unknown)"),
        ));
    }
    let kind = f.token_type.as_deref().unwrap_or("(unknown)");
    let current_kind = e.current.and_then(|c| c.token_type.as_deref());
    if kind != e.token_type && Some(kind) != current_kind {
        return Err(format!(
            "the candidate is a {kind} token; a system-user token is expected (Business Manager > Users > System users > Generate new token)"
        ));
    }
    match &c.usability {
        Usability::Usable => {}
        Usability::Unusable(why) => return Err(format!("the candidate cannot be used: {why}")),
        Usability::Dead(api) => {
            return Err(format!(
                "Meta says the candidate is dead: {}",
                crate::meta::error::dead_reason(api)
            ));
        }
        Usability::Unknown(why)
        | Usability::OwnCredentials(why)
        | Usability::Throttled { detail: why, .. } => {
            return Err(format!("the candidate could not be proven to work: {why}"));
        }
    }
    // A consumer may need any scope the current token has (`business_management`,
    // `whatsapp_business_manage_events`, ...): a successor that lost one breaks it silently.
    if let Some(cur) = e.current {
        let lost: Vec<&str> = cur
            .scopes
            .iter()
            .filter(|s| !f.scopes.contains(s))
            .map(String::as_str)
            .collect();
        if !lost.is_empty() {
            return Err(format!(
                "the candidate lacks {}, which the current token has",
                lost.join(", ")
            ));
        }
    }
    let end = |facts: &TokenFacts| -> Option<Timestamp> {
        match (facts.expires, effective_expiry(facts, e.max_age)) {
            (_, Some(eff)) => Some(eff.at),
            // Never expiring and no max_age: lives forever.
            (Expires::Never, None) => None,
            (_, None) => Some(Timestamp::UNIX_EPOCH),
        }
    };
    // Where Meta does not report the expiry (Instagram, Threads: only a renewal tells it), a
    // candidate that works and whose expiry is unknown cannot be compared: it is accepted,
    // and its first refresh records its expiry.
    let incomparable = !e.expiry_reported && f.expires == Expires::Unknown;
    if let Some(cur) = e.current.filter(|_| !incomparable) {
        let (new_end, cur_end) = (end(f), end(cur));
        let longer = match (new_end, cur_end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(n), Some(c)) => n > c,
        };
        if !longer {
            return Err(format!(
                "the candidate does not live longer than the current token (candidate until {}, current until {})",
                new_end.map_or("never".into(), crate::timefmt::utc),
                cur_end.map_or("never".into(), crate::timefmt::utc),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Binding;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_790_000_000;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn facts(fp: &str, kind: &str, expires: Expires, issued: i64) -> TokenFacts {
        TokenFacts {
            fingerprint: Fingerprint::of(fp),
            app_id: Some("634974688087057".into()),
            application: Some("Billing".into()),
            token_type: Some(kind.into()),
            expires,
            data_access_expires_at: None,
            issued_at: Some(ts(issued)),
            scopes: crate::graph::WHATSAPP_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            wabas: vec!["102290129340398".into()],
        }
    }

    fn eff(at: i64) -> Effective {
        Effective {
            at: ts(at),
            binding: Binding::Expiry,
        }
    }

    #[test]
    fn rotate_at_is_a_third_of_the_lifetime_but_at_least_seven_days_before() {
        // 60-day token: rotate 20 days before, at day 40.
        assert_eq!(
            rotate_at(&eff(NOW + 60 * DAY), Some(ts(NOW)), None),
            ts(NOW + 40 * DAY)
        );
        // 24-hour token: seven days before its end, that is at once.
        assert_eq!(
            rotate_at(&eff(NOW + DAY), Some(ts(NOW)), None),
            ts(NOW - 6 * DAY)
        );
        // 15-day token: a third is 5 days, less than 7: 7 days before.
        assert_eq!(
            rotate_at(&eff(NOW + 15 * DAY), Some(ts(NOW)), None),
            ts(NOW + 8 * DAY)
        );
        // Unknown issue time: the 7-day floor.
        assert_eq!(rotate_at(&eff(NOW), None, None), ts(NOW - 7 * DAY));
        // Configured lead wins, even when shorter than the floor.
        assert_eq!(
            rotate_at(
                &eff(NOW + 60 * DAY),
                Some(ts(NOW)),
                Some(Duration::from_secs(3 * 86_400))
            ),
            ts(NOW + 57 * DAY)
        );
    }

    fn rotation() -> Rotation {
        Rotation::begin(
            "0b6f3d4e-2a51-4c8e-9f7a-1d2c3b4a5e6f".into(),
            "prod",
            Origin::Mint,
            "due".into(),
            Side {
                version: "v1".into(),
                fingerprint: Fingerprint::of("old"),
            },
            ts(NOW),
        )
    }

    fn mint_token_config(expiring: bool) -> crate::config::TokenConfig {
        let rotation = crate::config::RotationConfig {
            source: crate::config::Source::Mint(crate::config::MintConfig {
                system_user_id: "104169029247128".into(),
                admin_token: crate::config::SecretRef::Env("ADMIN".into()),
                expiring,
                scopes: Vec::new(),
            }),
            ..Default::default()
        };
        crate::config::TokenConfig {
            name: "prod".into(),
            kind: crate::config::Kind::Whatsapp,
            app: None,
            page: None,
            ad_accounts: Vec::new(),
            business: None,
            phone_number_id: None,
            waba_id: None,
            store: crate::config::StoreConfig::File {
                path: None,
                key: None,
            },
            schedule: crate::config::Schedule {
                cron: crate::config::DEFAULT_CRON.into(),
                timezone: "UTC".into(),
            },
            policy: crate::policy::Policy::default(),
            rotation,
            targets: Vec::new(),
        }
    }

    /// Issue 13, point 9: a mint refused because the business must use expiring tokens is
    /// not tried again every `repeat_interval`; it waits for the settings to change.
    #[test]
    fn a_failure_only_the_config_fixes_waits_for_a_config_change() {
        let never = mint_token_config(false);
        let state = crate::state::TokenState {
            facts: Some(facts(
                "cur",
                SYSTEM_USER,
                Expires::At(ts(NOW + DAY)),
                NOW - 59 * DAY,
            )),
            verdict: Some(crate::policy::Verdict::Healthy),
            ..Default::default()
        };
        let mut last = rotation();
        last.outcome = Some(Outcome::Failed {
            step: Step::Obtain,
            reason: "refused".into(),
        });
        last.needs_config_change = Some(settings_key(&never));
        let much_later = ts(NOW + 30 * DAY);
        assert_eq!(start_reason(&never, &state, Some(&last), much_later), None);
        // The operator sets lifetime = "60d": the rotation starts at once.
        let sixty = mint_token_config(true);
        assert_ne!(settings_key(&sixty), settings_key(&never));
        assert!(start_reason(&sixty, &state, Some(&last), ts(NOW)).is_some());
        // An ordinary failure waits repeat_interval only.
        last.needs_config_change = None;
        assert!(start_reason(&never, &state, Some(&last), much_later).is_some());
    }

    /// An Instagram or Threads token whose expiry nobody recorded (imported without
    /// `--expires-in`) is renewed at once under the default 60-day rotation period too: the
    /// renewal is what learns its expiry. (With `max_age` set it was never due, and expired
    /// without a warning.)
    #[test]
    fn a_kind_token_of_unknown_expiry_is_due_at_once_whatever_the_rotation_period() {
        let mut t = mint_token_config(true);
        t.kind = crate::config::Kind::Instagram;
        assert!(t.policy.max_age.is_some(), "the default period");
        let f = TokenFacts {
            issued_at: None,
            ..facts("cur", "USER", Expires::Unknown, NOW)
        };
        assert_eq!(due_at(&t, &f), Some(Timestamp::UNIX_EPOCH));
        t.policy.max_age = None;
        assert_eq!(due_at(&t, &f), Some(Timestamp::UNIX_EPOCH));
    }

    /// Meta handed back the current token (extended in place): a non-expiring token due by
    /// its rotation period is not asked again for that version (it was, at every check); an
    /// expiring one is asked again a `repeat_interval` later; a new version starts afresh,
    /// and a dead token is always rotated.
    #[test]
    fn a_token_meta_handed_back_is_not_asked_again_at_every_check() {
        let t = mint_token_config(true);
        let never = |fp: &str| crate::state::TokenState {
            facts: Some(facts(fp, SYSTEM_USER, Expires::Never, NOW - 50 * DAY)),
            verdict: Some(crate::policy::Verdict::Healthy),
            ..Default::default()
        };
        assert!(
            start_reason(&t, &never("old"), None, ts(NOW)).is_some(),
            "due by max_age"
        );
        let mut last = rotation();
        last.outcome = Some(Outcome::Extended { until: None });
        last.updated = ts(NOW);
        for later in [ts(NOW + 60), ts(NOW + 30 * DAY)] {
            assert_eq!(start_reason(&t, &never("old"), Some(&last), later), None);
        }
        assert!(start_reason(&t, &never("new"), Some(&last), ts(NOW + 60)).is_some());
        let mut dead = never("old");
        dead.verdict = Some(crate::policy::Verdict::Dead {
            reason: "x".into(),
            expired: false,
        });
        assert!(start_reason(&t, &dead, Some(&last), ts(NOW + 60)).is_some());
        let expiring = crate::state::TokenState {
            facts: Some(facts(
                "old",
                SYSTEM_USER,
                Expires::At(ts(NOW + 5 * DAY)),
                NOW - 55 * DAY,
            )),
            verdict: Some(crate::policy::Verdict::Healthy),
            ..Default::default()
        };
        assert_eq!(start_reason(&t, &expiring, Some(&last), ts(NOW + 60)), None);
        assert!(start_reason(&t, &expiring, Some(&last), ts(NOW + DAY + 60)).is_some());
    }

    #[test]
    fn an_unusable_marketing_token_is_not_rotated_but_a_dead_one_is() {
        let mut t = mint_token_config(true);
        let mut state = crate::state::TokenState {
            facts: Some(facts(
                "cur",
                SYSTEM_USER,
                Expires::At(ts(NOW + 50 * DAY)),
                NOW - 10 * DAY,
            )),
            verdict: Some(crate::policy::Verdict::Unusable {
                reason: "ad account act_1 is not running (account_status 2)".into(),
            }),
            ..Default::default()
        };
        assert!(
            start_reason(&t, &state, None, ts(NOW)).is_some(),
            "WhatsApp: a successor is the fix"
        );
        t.kind = crate::config::Kind::Marketing;
        assert_eq!(
            start_reason(&t, &state, None, ts(NOW)),
            None,
            "a new token would not run the account"
        );
        state.verdict = Some(crate::policy::Verdict::Dead {
            reason: "invalidated".into(),
            expired: false,
        });
        assert!(start_reason(&t, &state, None, ts(NOW)).is_some());
        t.kind = crate::config::Kind::WhatsappBusiness;
        state.verdict = Some(crate::policy::Verdict::Unusable {
            reason: "disconnected by the customer".into(),
        });
        assert_eq!(start_reason(&t, &state, None, ts(NOW)), None);
    }

    #[test]
    fn steps_run_in_order_and_revoke_waits_for_the_grace_period() {
        let grace = Some(Duration::from_secs(DAY as u64));
        let mut r = rotation();
        assert_eq!(next(&r, ts(NOW)), Action::Run(Step::Obtain));
        let side = Side {
            version: r.id.clone(),
            fingerprint: Fingerprint::of("new"),
        };
        apply(&mut r, Event::Obtained(side.clone()), grace, ts(NOW));
        assert_eq!(r.new, Some(side));
        assert_eq!(next(&r, ts(NOW)), Action::Run(Step::Validate));
        apply(
            &mut r,
            Event::Validated(facts("new", SYSTEM_USER, Expires::Never, NOW)),
            grace,
            ts(NOW),
        );
        assert_eq!(next(&r, ts(NOW)), Action::Run(Step::Deliver));
        apply(&mut r, Event::Delivered, grace, ts(NOW));
        assert_eq!(next(&r, ts(NOW)), Action::Run(Step::Promote));
        apply(&mut r, Event::Promoted, grace, ts(NOW + 10));
        assert_eq!(r.promoted_at, Some(ts(NOW + 10)));
        assert_eq!(
            next(&r, ts(NOW + 20)),
            Action::WaitUntil(ts(NOW + 10 + DAY))
        );
        assert_eq!(next(&r, ts(NOW + 10 + DAY)), Action::Run(Step::Revoke));
        apply(
            &mut r,
            Event::Transient("timeout".into()),
            grace,
            ts(NOW + DAY + 20),
        );
        assert_eq!(r.attempts, 1);
        assert_eq!(
            r.step,
            Progress::Next(Step::Revoke),
            "a transient failure stays on its step"
        );
        apply(&mut r, Event::Revoked, grace, ts(NOW + DAY + 30));
        assert_eq!(r.attempts, 0);
        assert_eq!(
            next(&r, ts(NOW + DAY + 30)),
            Action::Run(Step::VerifyRevoked)
        );
        apply(&mut r, Event::RevokeConfirmed, grace, ts(NOW + DAY + 40));
        assert_eq!(r.outcome, Some(Outcome::Completed { revoked: true }));
        assert_eq!(next(&r, ts(NOW + DAY + 40)), Action::Done);
        assert!(!r.is_active());
    }

    #[test]
    fn never_revoking_finishes_at_promotion_and_failures_name_their_step() {
        let mut r = rotation();
        r.step = Step::Promote.into();
        apply(&mut r, Event::Promoted, None, ts(NOW));
        assert_eq!(r.outcome, Some(Outcome::Completed { revoked: false }));
        assert_eq!(r.revoke_at, None);

        let mut r = rotation();
        apply(&mut r, Event::Failed("mint refused".into()), None, ts(NOW));
        assert_eq!(
            r.outcome,
            Some(Outcome::Failed {
                step: Step::Obtain,
                reason: "mint refused".into()
            })
        );
        let mut r = rotation();
        r.step = Step::Validate.into();
        apply(&mut r, Event::Rejected("lacks x".into()), None, ts(NOW));
        assert_eq!(
            r.outcome,
            Some(Outcome::Rejected {
                check: "lacks x".into()
            })
        );
    }

    #[test]
    fn the_record_round_trips_through_json() {
        let mut r = rotation();
        let side = Side {
            version: r.id.clone(),
            fingerprint: Fingerprint::of("new"),
        };
        apply(&mut r, Event::Obtained(side), None, ts(NOW));
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rotation>(&text).unwrap(), r);
    }

    /// The step and the source became types; the record keeps the words it always had, so a
    /// record written before loads, and `rotations/<token>.json` reads the same.
    #[test]
    fn step_and_source_keep_their_words_in_the_record() {
        let old = r#"{"id":"0b6f3d4e-2a51-4c8e-9f7a-1d2c3b4a5e6f","token":"prod","source":"staged","reason":"due","started":"2026-09-21T13:46:40Z","updated":"2026-09-21T13:46:40Z","old":{"version":"v1","fingerprint":"ba7816bf"},"new":null,"new_facts":null,"step":"finished","obtain_sent":false,"promoted_at":null,"revoke_at":null,"attempts":0,"last_error":null,"outcome":{"outcome":"failed","step":"verify_revoked","reason":"x"}}"#;
        let r: Rotation = serde_json::from_str(old).unwrap();
        assert_eq!(r.source, Origin::Staged);
        assert_eq!(r.step, Progress::Finished);
        assert!(!r.is_active());
        assert_eq!(
            r.outcome,
            Some(Outcome::Failed {
                step: Step::VerifyRevoked,
                reason: "x".into()
            })
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            old,
            "written back unchanged"
        );

        let mut r = rotation();
        for (p, word) in [
            (Step::Obtain.into(), "obtain"),
            (Step::Validate.into(), "validate"),
            (Step::Deliver.into(), "deliver"),
            (Step::Promote.into(), "promote"),
            (Step::Revoke.into(), "revoke"),
            (Step::VerifyRevoked.into(), "verify_revoked"),
            (Progress::Finished, "finished"),
        ] {
            r.step = p;
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["step"], word);
            assert_eq!(p.word(), word);
            assert_eq!(serde_json::from_value::<Rotation>(v).unwrap().step, p);
        }
        for (o, word) in [
            (Origin::Staged, "staged"),
            (Origin::Refresh, "refresh"),
            (Origin::Mint, "mint"),
        ] {
            r.source = o;
            assert_eq!(serde_json::to_value(&r).unwrap()["source"], word);
            assert_eq!(o.to_string(), word);
        }
        assert!(
            serde_json::from_str::<Rotation>(&old.replace("\"staged\"", "\"minted\"")).is_err()
        );
        assert!(
            serde_json::from_str::<Rotation>(&old.replace("\"finished\"", "\"done\"")).is_err()
        );
    }

    /// A finished rotation has no step to run: `next` says done, and no event moves it.
    #[test]
    fn a_finished_rotation_is_not_moved_by_an_event() {
        let mut r = rotation();
        apply(&mut r, Event::Failed("mint refused".into()), None, ts(NOW));
        let finished = r.clone();
        assert_eq!(next(&r, ts(NOW + 1)), Action::Done);
        apply(&mut r, Event::Delivered, None, ts(NOW + 1));
        assert_eq!(r, finished);
    }

    fn expect<'a>(current: Option<&'a TokenFacts>) -> Expectations<'a> {
        Expectations {
            app_id: Some("634974688087057"),
            token_type: SYSTEM_USER,
            expiry_reported: true,
            current,
            max_age: Some(Duration::from_secs(60 * 86_400)),
        }
    }

    fn report(f: TokenFacts) -> CandidateReport {
        CandidateReport {
            invalid: None,
            facts: f,
            usability: Usability::Usable,
        }
    }

    #[test]
    fn judge_names_the_first_failed_check() {
        let cur = facts(
            "old",
            SYSTEM_USER,
            Expires::At(ts(NOW + 5 * DAY)),
            NOW - 55 * DAY,
        );
        let good = facts("new", SYSTEM_USER, Expires::At(ts(NOW + 60 * DAY)), NOW);
        assert_eq!(judge(&report(good.clone()), &expect(Some(&cur))), Ok(()));
        // A dead current token: any valid candidate will do.
        assert_eq!(judge(&report(good.clone()), &expect(None)), Ok(()));

        let mut c = report(good.clone());
        c.invalid = Some("the token was revoked".into());
        assert!(
            judge(&c, &expect(Some(&cur)))
                .unwrap_err()
                .contains("invalid")
        );

        let same = report(cur.clone());
        assert!(
            judge(&same, &expect(Some(&cur)))
                .unwrap_err()
                .contains("itself")
        );

        let mut f = good.clone();
        f.app_id = Some("999".into());
        assert!(
            judge(&report(f), &expect(Some(&cur)))
                .unwrap_err()
                .contains("app 999")
        );

        let mut f = good.clone();
        f.token_type = Some("USER".into());
        assert!(
            judge(&report(f), &expect(Some(&cur)))
                .unwrap_err()
                .contains("USER token")
        );
        // A user token replacing a user token is allowed.
        let mut user_cur = cur.clone();
        user_cur.token_type = Some("USER".into());
        let mut f = good.clone();
        f.token_type = Some("USER".into());
        assert_eq!(judge(&report(f), &expect(Some(&user_cur))), Ok(()));

        // What the one usability rule decided is what validation says.
        let mut c = report(good.clone());
        c.usability = Usability::Unusable("the token lacks whatsapp_business_messaging".into());
        assert_eq!(
            judge(&c, &expect(Some(&cur))),
            Err("the candidate cannot be used: the token lacks whatsapp_business_messaging".into())
        );
        let mut c = report(good.clone());
        c.usability = Usability::Unknown("reading phone number 1: timeout".into());
        assert!(judge(&c, &expect(Some(&cur))).is_err());

        // A scope the current token has and the candidate lost is named (issue 13, point 6).
        let mut rich = cur.clone();
        rich.scopes.push("business_management".into());
        assert_eq!(
            judge(&report(good.clone()), &expect(Some(&rich))),
            Err("the candidate lacks business_management, which the current token has".into())
        );
        let mut f = good.clone();
        f.scopes.push("business_management".into());
        f.scopes.push("whatsapp_business_manage_events".into());
        assert_eq!(
            judge(&report(f), &expect(Some(&rich))),
            Ok(()),
            "more is fine"
        );

        // Shorter-lived than the current token: a 1-day candidate for a 5-day current.
        let short = facts("new", SYSTEM_USER, Expires::At(ts(NOW + DAY)), NOW);
        assert!(
            judge(&report(short), &expect(Some(&cur)))
                .unwrap_err()
                .contains("live longer")
        );
        // Never-expiring candidate with no max_age outlives anything.
        let mut e = expect(Some(&cur));
        e.max_age = None;
        let never = facts("new", SYSTEM_USER, Expires::Never, NOW);
        assert_eq!(judge(&report(never), &e), Ok(()));
    }
}
