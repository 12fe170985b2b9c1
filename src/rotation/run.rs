//! Running a rotation: the IO around the pure steps of [`super`].
//!
//! [`drive`] takes one token's rotation as far as it can go now: it starts one when asked,
//! resumes one a crashed process left, runs each step against the store and Meta, and saves the
//! record after every step (then passes a failpoint, so the crash tests can stop the process
//! there). A per-token lock in the state directory keeps a daemon and a manual `tokenwarden
//! rotate` from running the same rotation at once; across hosts the store's compare-and-swap
//! promotion decides. Emails go into the outbox, with ids derived from the rotation id, so a
//! resumed rotation never mails twice.
//!
//! Every token a rotation asks Meta for and does not promote is revoked and confirmed dead: a
//! rejected candidate, one the store refused to take, and one whose rotation another instance
//! overtook (read back by its version id once the race is decided; kept if it became current).
//! The one window left: a kill after Meta answered a refresh or mint and before the candidate
//! reached the store. The intent is saved before the call (`obtain_sent`) and the store write
//! follows at once; the next run asks Meta again, and the unrecorded token, written nowhere,
//! expires unused (Meta has no call that lists a system user's tokens, so nothing can find it).

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;

use super::{
    Action, CandidateReport, Event, Expectations, Origin, Outcome, Progress, Rotation, Side, Step,
};
use crate::alert::RotationMail as Mail;
use crate::audit::{Audit, AuditEvent};
use crate::config::{Config, Kind, Source, TokenConfig};
use crate::graph::{self, GraphClient, GraphError};

use crate::policy::{Expires, TokenFacts};
use crate::secret::Secret;
use crate::state::{Layout, RecordLock, RecordStore, StateError};
use crate::store::{SecretStore, Store, StoreError, VersionId};
use crate::target::PushEvent;

/// Directory inside the state directory holding one record per token.
pub const ROTATIONS_DIR: &str = crate::state::ROTATIONS_DIR;

/// How many verification attempts may still see the old token valid before the rotation
/// gives up on confirming the revoke and tells on-call.
const VERIFY_ATTEMPTS: u32 = 5;

/// The rotation records of one state directory: `rotations/<token>.json`, each beside its
/// lock `rotations/<token>.lock`, through the state directory's [`RecordStore`].
#[derive(Debug, Clone)]
pub struct RotationLog {
    records: RecordStore,
}

/// Holds a token's rotation lock until dropped.
pub type RotationLock = RecordLock;

impl RotationLog {
    /// The records under `state_dir`.
    pub fn new(state_dir: &Path) -> RotationLog {
        RotationLog {
            records: RecordStore::new(state_dir.join(ROTATIONS_DIR), Layout::Pretty).aside_loses(
                "the rotation in progress is then forgotten; the audit log shows where it stood",
            ),
        }
    }

    /// The latest rotation of `token` (active or finished), if any.
    ///
    /// # Errors
    /// [`StateError`] when the record cannot be read or parsed.
    pub fn load(&self, token: &str) -> Result<Option<Rotation>, StateError> {
        self.records.load(token)
    }

    /// Saves `r` atomically (mode 0600).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save(&self, r: &Rotation) -> Result<(), StateError> {
        self.records.save(&r.token, r)
    }

    /// Takes `token`'s lock without waiting; `None` when another process holds it.
    ///
    /// # Errors
    /// [`StateError::Io`] when the lock file cannot be opened.
    pub fn try_lock(&self, token: &str) -> Result<Option<RotationLock>, StateError> {
        self.records.try_lock(token)
    }
}

/// Everything a rotation touches.
pub struct Deps<'a> {
    /// The whole config (app id, state directory).
    pub cfg: &'a Config,
    /// The token being rotated.
    pub token: &'a TokenConfig,
    /// Meta.
    pub graph: &'a GraphClient,
    /// The token's store.
    pub store: &'a Store,
    /// Rotation records and locks.
    pub log: &'a RotationLog,
    /// The audit log.
    pub audit: &'a Audit,
    /// Where alerts go: the outbox (`None`: emails are logged only) and the receivers.
    pub sinks: crate::notify::Sinks<'a>,
    /// The time source (a test clock in tests).
    pub now: &'a (dyn Fn() -> Timestamp + Sync),
}

/// How far [`drive`] got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// No rotation is running and none was started; why, in words.
    Idle(String),
    /// Another process is rotating this token now.
    Busy,
    /// The rotation waits for its grace period before revoking the old token.
    Waiting(Rotation),
    /// A step failed transiently; the rotation resumes on the next run.
    Stalled(Rotation),
    /// The rotation finished (see its outcome).
    Finished(Rotation),
}

/// Why a rotation could not even be looked at.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// The rotation record or lock in the state directory is unusable: fix the directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store could not say what is current: fix or retry the store, then run again.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Takes the rotation of `d.token` as far as it can go now. With `start` (a reason in words)
/// and no rotation in progress, a new one begins; without it only a rotation in progress moves.
///
/// # Errors
/// [`RotateError`] when the record cannot be kept or the store cannot name the current token;
/// failures of steps are outcomes inside the [`Report`], not errors.
pub async fn drive(d: &Deps<'_>, start: Option<String>) -> Result<Report, RotateError> {
    let Some(_lock) = d.log.try_lock(&d.token.name)? else {
        return Ok(Report::Busy);
    };
    let mut r = match d.log.load(&d.token.name)? {
        Some(r) if r.is_active() => {
            tracing::info!(token = %d.token.name, rotation = %r.id, step = r.step.word(), "resuming rotation");
            r
        }
        _ => match start {
            None => return Ok(Report::Idle("no rotation in progress".into())),
            Some(reason) => match begin(d, reason).await? {
                Ok(r) => r,
                Err(idle) => return Ok(Report::Idle(idle)),
            },
        },
    };
    let revoke_after = d.token.rotation.revoke_after;
    loop {
        // In the daemon, a SIGTERM stops the rotation here, between steps: the step in
        // progress finished and was saved above, and the next start resumes at the next one.
        if crate::liveness::before_step() {
            return Ok(Report::Waiting(r));
        }
        let now = (d.now)();
        let step = match super::next(&r, now) {
            Action::Done => return Ok(Report::Finished(r)),
            Action::WaitUntil(_) => return Ok(Report::Waiting(r)),
            Action::Run(step) => step,
        };
        let event = run_step(d, &mut r, step).await;
        if matches!(event, Event::Superseded(_)) && step != Step::Revoke {
            abandon_candidate(d, &r).await;
        }
        let transient = matches!(
            event,
            Event::Transient(_) | Event::DeliveryFailed(_) | Event::CopiesRemain(_)
        );
        let mail = match &event {
            Event::DeliveryFailed(_) => Some(Mail::DeliveryFailed),
            Event::CopiesRemain(_) => Some(Mail::CopiesRemain),
            _ => None,
        };
        let summary = event_word(&event);
        super::apply(&mut r, event, revoke_after, (d.now)());
        d.log.save(&r)?;
        d.audit.record(
            (d.now)(),
            AuditEvent::RotationStep,
            serde_json::json!({
                "token": d.token.name, "rotation": r.id, "step": step.word(), "result": summary,
                "next": r.step.word(), "old": r.old.fingerprint.to_string(),
                "new": r.new.as_ref().map(|s| s.fingerprint.to_string()),
                "error": r.last_error, "outcome": r.outcome,
            }),
        );
        match &r.last_error {
            Some(e) if transient => {
                tracing::warn!(token = %d.token.name, step = step.word(), attempts = r.attempts, error = %e, "rotation step failed; retrying on the next run");
            }
            _ => {
                tracing::info!(token = %d.token.name, step = step.word(), result = summary, next = r.step.word(), "rotation step")
            }
        }
        notify(d, &r, step, mail);
        crate::failpoint::hit(&format!("rotation.after_{}", step.word()));
        if transient {
            return Ok(Report::Stalled(r));
        }
    }
}

fn event_word(e: &Event) -> &'static str {
    match e {
        Event::Obtained(_) => "obtained",
        Event::Validated(_) => "validated",
        Event::Rejected(_) => "rejected",
        Event::Delivered => "delivered",
        Event::Promoted => "promoted",
        Event::Superseded(_) => "superseded",
        Event::Revoked => "revoked",
        Event::RevokeConfirmed => "revoke_confirmed",
        Event::Transient(_) => "transient_failure",
        Event::DeliveryFailed(_) => "delivery_failed",
        Event::CopiesRemain(_) => "copies_remain",
        Event::Failed(_) => "failed",
        Event::Extended(_) => "extended_in_place",
    }
}

/// Starts a rotation from the store's current version: with a staged candidate it starts at
/// validation; with nothing staged for a `staged` source it does not start (`Err` says why).
async fn begin(d: &Deps<'_>, reason: String) -> Result<Result<Rotation, String>, RotateError> {
    let (old_v, old) = d.store.current_version().await?;
    let now = (d.now)();
    let old = Side {
        version: old_v.0,
        fingerprint: old.fingerprint(),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let mut r = Rotation::begin(
        id,
        &d.token.name,
        Origin::from(&d.token.rotation.source),
        reason,
        old,
        now,
    );
    // A staged candidate is used whatever the source: a person's explicit choice wins.
    match d.store.pending().await? {
        Some((v, s)) => {
            let side = Side {
                version: v.0,
                fingerprint: s.fingerprint(),
            };
            r.source = Origin::Staged;
            super::apply(&mut r, Event::Obtained(side), None, now);
        }
        None if d.token.rotation.source == Source::Staged => {
            return Ok(Err(format!(
                "nothing is staged; stage the next token with `tokenwarden stage --token {}`",
                d.token.name
            )));
        }
        None => {}
    }
    d.log.save(&r)?;
    d.audit.record(
        now,
        AuditEvent::RotationStarted,
        serde_json::json!({"token": d.token.name, "rotation": r.id, "source": r.source, "reason": r.reason, "old": r.old.fingerprint.to_string()}),
    );
    tracing::info!(token = %d.token.name, rotation = %r.id, source = %r.source, reason = %r.reason, "rotation started");
    crate::failpoint::hit("rotation.after_start");
    Ok(Ok(r))
}

async fn run_step(d: &Deps<'_>, r: &mut Rotation, step: Step) -> Event {
    match step {
        Step::Obtain => obtain(d, r).await,
        Step::Validate => validate(d, r).await,
        Step::Deliver => deliver(d, r).await,
        Step::Promote => promote(d, r).await,
        Step::Revoke => revoke(d, r).await,
        Step::VerifyRevoked => verify_revoked(d, r).await,
    }
}

fn store_event(e: StoreError) -> Event {
    match e {
        // Someone else changed the store mid-step: look again on the next run.
        StoreError::Unavailable { .. } | StoreError::Conflict { .. } => {
            Event::Transient(e.to_string())
        }
        e => Event::Failed(e.to_string()),
    }
}

fn graph_event(what: &str, e: GraphError) -> Event {
    match e {
        GraphError::Transient(t) => Event::Transient(format!("{what}: {t}")),
        e => Event::Failed(format!("{what}: {e}")),
    }
}

async fn obtain(d: &Deps<'_>, r: &mut Rotation) -> Event {
    // A candidate already staged is used: ours, from before a crash (its version is our id),
    // or one another tokenwarden instance or a person staged meanwhile. Asking Meta for a
    // second token would only race it.
    match d.store.pending().await {
        Ok(Some((v, s))) => {
            if v.0 != r.id {
                tracing::info!(token = %d.token.name, version = %v, "a candidate is already staged; using it instead of asking Meta for another");
                r.source = Origin::Staged;
            }
            return Event::Obtained(Side {
                version: v.0,
                fingerprint: s.fingerprint(),
            });
        }
        Ok(None) => {}
        Err(e) => return store_event(e),
    }
    let (cur_v, current) = match d.store.current_version().await {
        Ok(c) => c,
        Err(e) => return store_event(e),
    };
    if cur_v.0 != r.old.version {
        return Event::Superseded(format!(
            "the store's current version is now {cur_v}, not {}",
            r.old.version
        ));
    }
    let token = match &d.token.rotation.source {
        Source::Staged => {
            return Event::Failed(format!(
                "nothing is staged; stage the next token with `tokenwarden stage --token {}`",
                d.token.name
            ));
        }
        Source::Refresh => refresh(d, r, &current).await,
        Source::Mint(m) => mint(d, r, m, &current).await,
    };
    let token = match token {
        Ok(t) => t,
        Err(ev) => return ev,
    };
    // Meta may hand back the current token itself, living longer (seen for refresh): it is
    // not a successor. Staging it would have it "rejected" and revoked: the live token.
    if token.fingerprint() == current.fingerprint() {
        return extended_in_place(d, r, &token).await;
    }
    stage_obtained(d, r, token).await
}

/// Meta's refresh of `current`, for a token that can be refreshed: never a non-expiring one
/// (it would come back as a 60-day one) and never a dead one (Meta refuses).
async fn refresh(d: &Deps<'_>, r: &mut Rotation, current: &Secret) -> Result<Secret, Event> {
    if !d.token.kind.debug_token() {
        return refresh_kind(d, r, current).await;
    }
    if let Some(page) = d.token.page.as_ref().filter(|_| d.token.kind == Kind::Page) {
        return retake_page(d, r, page).await;
    }
    if let Some(b) = d
        .token
        .business
        .as_ref()
        .filter(|_| d.token.kind == Kind::WhatsappBusiness)
    {
        return fetch_business(d, r, b).await;
    }
    match d.graph.debug_token(current).await {
        Err(e) => return Err(graph_event("inspecting the current token", e)),
        Ok(info) if info.invalid_reason().is_some() => {
            let why = info
                .invalid_reason()
                .map(|a| graph::dead_reason(&a))
                .unwrap_or_default();
            return Err(Event::Failed(format!(
                "the current token cannot be refreshed because it is no longer valid ({why}); only a new token from Business Manager can replace it: stage it with `tokenwarden stage --token {}`",
                d.token.name
            )));
        }
        Ok(info) if info.expires_at == graph::Expiry::Never => {
            return Err(Event::Failed(
                "the current token never expires; refreshing would trade it for a 60-day token. Use source = \"mint\" with lifetime = \"never\", or \"staged\"".into(),
            ));
        }
        Ok(_) => {}
    }
    mark_sent(d, r);
    d.graph
        .refresh_token(current)
        .await
        .map(|n| n.token)
        .map_err(|e| graph_event("refreshing the token", e))
}

/// The renewal of an Instagram or Threads token (`GET /refresh_access_token`): only for a
/// token that still works, is not expired and (when its issue time is known) is at least 24
/// hours old, as Meta's pages require. An expired or invalidated one cannot be refreshed: the
/// failure says a person must log in again, and where. The expiry Meta gives is recorded
/// ([`crate::observe::ExpiryLog`]) before the token leaves this function, so the checks know
/// it from the first moment the token exists in the store.
async fn refresh_kind(d: &Deps<'_>, r: &mut Rotation, current: &Secret) -> Result<Secret, Event> {
    let kind = d.token.kind;
    let relogin = kind.advice().relogin;
    let info = crate::observe::inspect(&d.cfg.state_dir, d.token, d.graph, current)
        .await
        .map_err(|e| graph_event("probing the current token", e))?;
    let now = (d.now)();
    if let Some(api) = info.invalid_reason() {
        return Err(Event::Failed(format!(
            "the current token cannot be refreshed because it is no longer valid ({}); {relogin}",
            graph::dead_reason(&api)
        )));
    }
    if let graph::Expiry::At(at) = info.expires_at
        && at <= now
    {
        return Err(Event::Failed(format!(
            "the current token expired at {}; {relogin}",
            crate::timefmt::utc(at)
        )));
    }
    let log = crate::observe::ExpiryLog::new(&d.cfg.state_dir);
    let min_age = crate::meta::kind::MIN_AGE_TO_REFRESH_SECS;
    // When Meta last refused it as possibly too young (its issue time unknown).
    let refused_young = log
        .find(&d.token.name, current.fingerprint())
        .filter(|e| e.expires_at.is_none())
        .map(|e| e.issued_at);
    if let Some(since) = info.issued_at.or(refused_young) {
        let age = now.as_second() - since.as_second();
        if age < min_age {
            return Err(Event::Transient(format!(
                "{} refreshes a token only once it is at least 24 hours old; asking again after {}",
                kind.host(),
                crate::timefmt::utc(
                    Timestamp::from_second(since.as_second() + min_age).unwrap_or(now)
                )
            )));
        }
    }
    // A token of unknown age may be a short-lived one (an hour, from a login just made),
    // which Meta cannot refresh, only exchange with the product app's own secret: with `app`
    // configured the exchange is tried first. Meta refuses it for a long-lived token, and the
    // refresh follows. Whatever it hands back is the successor, validated as any.
    if info.issued_at.is_none()
        && refused_young.is_none()
        && let Some(app) = &d.token.app
        && let Some(new) = exchange_first(d, r, app, current, now).await?
    {
        return Ok(new);
    }
    mark_sent(d, r);
    let new = match d.graph.refresh_kind(kind, current).await {
        Ok(new) => new,
        Err(GraphError::TokenDead(api)) => {
            return Err(Event::Failed(format!(
                "{} refused to refresh the token ({}); {relogin}",
                kind.host(),
                graph::dead_reason(&api)
            )));
        }
        // A token whose age nobody knows (imported, staged) may be younger than the 24
        // hours Meta requires; Meta's code for that is not documented. The first such
        // refusal is remembered and the refresh asked again a day later; a second one is a
        // failure for a person.
        Err(GraphError::Misconfigured(api))
            if info.issued_at.is_none() && refused_young.is_none() =>
        {
            let entry = crate::observe::RecordedExpiry {
                fingerprint: current.fingerprint(),
                issued_at: now,
                expires_at: None,
            };
            if let Err(e) = log.record(&d.token.name, entry) {
                tracing::error!(token = %d.token.name, error = %e, "cannot record the refused refresh");
            }
            // Meta made no token: nothing is left behind by this attempt.
            r.obtain_sent = false;
            return Err(Event::Transient(format!(
                "{} refused to refresh the token ({api}); it may be younger than the 24 hours Meta requires: asking again in a day",
                kind.host()
            )));
        }
        Err(e) => return Err(graph_event("refreshing the token", e)),
    };
    if let Some(expires_in) = new.expires_in {
        let entry = crate::observe::RecordedExpiry {
            fingerprint: new.token.fingerprint(),
            issued_at: now,
            expires_at: Timestamp::from_second(now.as_second() + expires_in.as_secs() as i64).ok(),
        };
        if let Err(e) = log.record(&d.token.name, entry) {
            // The token is still used; its expiry is unknown until the next renewal, and
            // an unknown expiry makes the renewal due at once, so nothing dies unnoticed.
            tracing::error!(token = %d.token.name, error = %e, "cannot record the refreshed token's expiry");
        }
    }
    Ok(new.token)
}

/// The exchange of a token of unknown age with the product app's own secret
/// (`GET /access_token?grant_type=ig_exchange_token|th_exchange_token`): `Some` with the
/// long-lived token (its expiry recorded before it leaves), `None` when Meta refuses it (not
/// short-lived; the refresh follows and judges the token). A refusal of the app's secret is the app's trouble, not
/// the token's: the app's "own credentials" alert ([`crate::appcreds`]) and a
/// transient failure, so the rotation is tried again once `app` is fixed and no token is
/// called dead.
async fn exchange_first(
    d: &Deps<'_>,
    r: &mut Rotation,
    app: &crate::config::KindApp,
    current: &Secret,
    now: Timestamp,
) -> Result<Option<Secret>, Event> {
    let kind = d.token.kind;
    let secret = app
        .app_secret
        .resolve()
        .map_err(|e| Event::Failed(format!("`app.app_secret` of app {}: {e}", app.app_id)))?;
    mark_sent(d, r);
    match d.graph.exchange_kind(kind, &secret, current).await {
        Ok(long) => {
            let expires_at = long
                .expires_in
                .and_then(|e| Timestamp::from_second(now.as_second() + e.as_secs() as i64).ok());
            let entry = crate::observe::RecordedExpiry {
                fingerprint: long.token.fingerprint(),
                issued_at: now,
                expires_at,
            };
            if let Err(e) =
                crate::observe::ExpiryLog::new(&d.cfg.state_dir).record(&d.token.name, entry)
            {
                tracing::error!(token = %d.token.name, error = %e, "cannot record the exchanged token's expiry");
            }
            app_seen(d, app, crate::appcreds::Seen::Accepted);
            Ok(Some(long.token))
        }
        Err(GraphError::OwnCredentials(api)) => {
            app_seen(
                d,
                app,
                crate::appcreds::Seen::Refused {
                    secret: secret.fingerprint(),
                    detail: api.to_string(),
                },
            );
            Err(Event::Transient(format!(
                "{} refused app {}'s secret ({api}): the `app` of this {kind} token must be the {kind} app's own id and secret from the App Dashboard; the rotation is tried again once it is fixed",
                kind.host(),
                app.app_id
            )))
        }
        // What Meta answers a long-lived token on the exchange is not documented: anything but
        // the app's credentials refused or a transient failure leaves the verdict to the
        // refresh that follows (it names a dead token in its own words).
        Err(e @ (GraphError::Misconfigured(_) | GraphError::TokenDead(_))) => {
            if matches!(e, GraphError::Misconfigured(_)) {
                // The token refused, not the app: an OAuth server authenticates the client
                // before it looks at the grant (RFC 6749 section 5.2: `invalid_client` before
                // `invalid_grant`), so the app's secret passed. Meta does not document the
                // order; at worst a still-wrong secret is told again at the next exchange.
                app_seen(d, app, crate::appcreds::Seen::Accepted);
            }
            // Refused: Meta made no token, so the refresh that follows is not a second ask.
            r.obtain_sent = false;
            if let Err(e) = d.log.save(r) {
                tracing::error!(error = %e, "cannot save the rotation record");
            }
            Ok(None)
        }
        Err(e) => Err(graph_event("exchanging the token", e)),
    }
}

/// Records what an exchange found of a product app's secret: the app's alert (once per app
/// and secret, whichever of the tokens sharing it met the refusal) or its recovery
/// ([`crate::appcreds`]).
fn app_seen(d: &Deps<'_>, app: &crate::config::KindApp, seen: crate::appcreds::Seen) {
    let a = crate::appcreds::App {
        kind: d.token.kind,
        app_id: &app.app_id,
    };
    if let Err(e) = crate::appcreds::settle(
        &d.cfg.state_dir,
        d.sinks,
        d.audit,
        a,
        &seen,
        d.token.policy.repeat_interval,
        (d.now)(),
    ) {
        tracing::error!(app = %app.app_id, error = %e, "cannot settle the app's credentials alert");
    }
}

/// A Page token taken again from the configured long-lived user token
/// (`GET /{page-id}?fields=access_token`). The user token dead means only a new login helps;
/// a refusal (no task on the Page any more) is a failure for a person too. Meta may hand back
/// the current Page token itself: `obtain` then extends it in place.
async fn retake_page(
    d: &Deps<'_>,
    r: &mut Rotation,
    page: &crate::config::PageConfig,
) -> Result<Secret, Event> {
    let relogin = Kind::Page.advice().relogin;
    let Some(user_ref) = &page.user_token else {
        return Err(Event::Failed(format!(
            "no `page.user_token` to take a new Page token from; {relogin}"
        )));
    };
    let user = user_ref
        .resolve()
        .map_err(|e| Event::Failed(format!("`page.user_token`: {e}")))?;
    mark_sent(d, r);
    match d.graph.page_token_from_user(&user, &page.id).await {
        Ok(t) => Ok(t),
        Err(GraphError::TokenDead(api)) => Err(Event::Failed(format!(
            "the user token in `page.user_token` is no longer valid ({}); {relogin}",
            graph::dead_reason(&api)
        ))),
        Err(GraphError::Misconfigured(api)) => Err(Event::Failed(format!(
            "Meta refused the Page token of Page {} to the user token ({api}): the person may have lost their task on the Page; {relogin}",
            page.id
        ))),
        Err(e) => Err(graph_event("taking the Page token again", e)),
    }
}

/// The customer's business token fetched again with the partner's own token
/// (`POST /{client-business-id}/system_user_access_tokens`, `fetch_only`). Meta may hand back
/// the current token itself: `obtain` then extends it in place. A refusal (the customer removed
/// the app) or a dead partner token is a failure for a person, never retried in a loop.
async fn fetch_business(
    d: &Deps<'_>,
    r: &mut Rotation,
    b: &crate::config::BusinessConfig,
) -> Result<Secret, Event> {
    // A group's member whose secret lacks the tag: nothing is sent (never a request for an
    // empty id, never another customer's id).
    let Some(client_business_id) = b.client_business_id.as_deref() else {
        return Err(Event::Failed(format!(
            "no client business id to fetch the business token for: tag the token's secret `{}` with the customer's business id (from Embedded Signup)",
            crate::config::TAG_CLIENT_BUSINESS
        )));
    };
    let partner = b
        .partner_token
        .resolve()
        .map_err(|e| Event::Failed(format!("`business.partner_token`: {e}")))?;
    mark_sent(d, r);
    match d
        .graph
        .fetch_business_token(&partner, client_business_id)
        .await
    {
        Ok(t) => Ok(t),
        Err(GraphError::TokenDead(api)) => Err(Event::Failed(format!(
            "the partner token in `business.partner_token` is no longer valid ({}); make a new one for the Tech Provider's admin system user",
            graph::dead_reason(&api)
        ))),
        Err(GraphError::Misconfigured(api)) => Err(Event::Failed(format!(
            "Meta refused the business token of business {client_business_id} ({api}): the customer may have removed the app (only the customer can reconnect it), or the business id is wrong"
        ))),
        Err(e) => Err(graph_event("fetching the business token", e)),
    }
}

/// A new token minted for the configured system user, with the scopes the current token has
/// (Meta's access-token page also assigns `business_management`; teams add others) or the
/// configured ones.
async fn mint(
    d: &Deps<'_>,
    r: &mut Rotation,
    m: &crate::config::MintConfig,
    current: &Secret,
) -> Result<Secret, Event> {
    let admin = m
        .admin_token
        .resolve()
        .map_err(|e| Event::Failed(format!("`mint.admin_token`: {e}")))?;
    let scopes = if m.scopes.is_empty() {
        match d.graph.debug_token(current).await {
            Ok(info) => mint_scopes(&info, d.token.kind),
            Err(e) => return Err(graph_event("inspecting the current token's scopes", e)),
        }
    } else {
        m.scopes.clone()
    };
    mark_sent(d, r);
    match d
        .graph
        .mint_token(&admin, &m.system_user_id, m.expiring, &scopes)
        .await
    {
        Ok(t) => Ok(t),
        Err(GraphError::Misconfigured(api)) if !m.expiring && api.code == 100 => {
            // "Some businesses must use expiring tokens ... omitting this parameter or
            // setting it to false results in an error" (the code is not documented; 100 is
            // what a refused parameter gets). Not retried until the config changes
            // (`start_reason`).
            r.needs_config_change = Some(super::settings_key(d.token));
            Err(Event::Failed(format!(
                "minting a non-expiring token for system user {} was refused ({api}); if this business must use expiring tokens, Meta refuses set_token_expires_in_60_days=false: set lifetime = \"60d\" in the token's `mint` table (no new attempt is made until the config changes)",
                m.system_user_id
            )))
        }
        Err(e) => Err(graph_event(
            &format!("minting a token for system user {}", m.system_user_id),
            e,
        )),
    }
}

/// Stages a token Meta just made. It exists only in memory until then: the store is tried a
/// few times, and a token it refuses is revoked at once rather than left live, tracked by
/// nobody.
async fn stage_obtained(d: &Deps<'_>, r: &Rotation, token: Secret) -> Event {
    let mut tries = 0;
    loop {
        tries += 1;
        match d.store.put_pending(&token, &r.id).await {
            Ok(v) => {
                return Event::Obtained(Side {
                    version: v.0,
                    fingerprint: token.fingerprint(),
                });
            }
            Err(StoreError::Unavailable { .. }) if tries < 4 => {
                tokio::time::sleep(Duration::from_millis(500 * tries)).await;
            }
            Err(e) => {
                revoke_own_candidate(d, r, &token).await;
                return store_event(e);
            }
        }
    }
}

/// The scopes to mint a successor with: the current token's (from its `debug_token`), so none
/// a consumer relies on is lost, and the two WhatsApp scopes in any case (for a Marketing
/// token, `ads_read` when it has neither ads scope).
fn mint_scopes(info: &graph::TokenInfo, kind: Kind) -> Vec<String> {
    let mut scopes: Vec<String> = if info.invalid_reason().is_none() {
        info.scopes.clone()
    } else {
        Vec::new()
    };
    if kind == Kind::Marketing {
        if !crate::meta::kind::ADS_SCOPES
            .iter()
            .any(|s| scopes.iter().any(|x| x == s))
        {
            scopes.push("ads_read".into());
        }
        return scopes;
    }
    for s in graph::WHATSAPP_SCOPES {
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_string());
        }
    }
    scopes
}

/// Whether `token` is the store's previous version (the token a finished rotation retired).
async fn is_previous(d: &Deps<'_>, token: &Secret) -> bool {
    matches!(d.store.previous().await, Ok(Some((_, p))) if p.fingerprint() == token.fingerprint())
}

/// Finishes a rotation whose "successor" is a token already in use: Meta's refresh handed
/// back the current token itself, living longer. Nothing is staged, delivered, promoted or
/// revoked; the new expiry is recorded (the rotation record, the audit log, one email).
async fn extended_in_place(d: &Deps<'_>, r: &Rotation, token: &Secret) -> Event {
    let until = match crate::observe::inspect(&d.cfg.state_dir, d.token, d.graph, token).await {
        Ok(info) => match info.expires_at {
            graph::Expiry::At(t) => Some(t),
            _ => None,
        },
        // The expiry is only information here: the next check reads it anyway.
        Err(e) => {
            tracing::warn!(token = %d.token.name, error = %e, "cannot read the extended token's new expiry");
            None
        }
    };
    tracing::info!(token = %d.token.name, rotation = %r.id, fingerprint = %token.fingerprint(), until = ?until.map(crate::timefmt::utc), "Meta handed back the current token with a later expiry: extended in place, nothing to promote or revoke");
    d.audit.record(
        (d.now)(),
        AuditEvent::TokenExtended,
        serde_json::json!({
            "token": d.token.name, "rotation": r.id, "fingerprint": token.fingerprint().to_string(),
            "until": until.map(|t| t.to_string()), "detail": "extended in place",
        }),
    );
    Event::Extended(until)
}

/// The last line of defence before any revoke: refuses a value equal to the store's current
/// token, whatever the source and whatever the record says, and says so in the log and the
/// audit log. Also refuses when the store cannot say what is current.
async fn revoke_allowed(d: &Deps<'_>, r: &Rotation, token: &Secret) -> Result<(), String> {
    let why = match d.store.current().await {
        Ok(current) if current.fingerprint() == token.fingerprint() => format!(
            "refusing to revoke the token with fingerprint {}: it is the current token in {}",
            token.fingerprint(),
            d.store.describe()
        ),
        Ok(_) => return Ok(()),
        Err(e) => format!(
            "refusing to revoke the token with fingerprint {} while {} cannot say which token is current: {e}",
            token.fingerprint(),
            d.store.describe()
        ),
    };
    tracing::error!(token = %d.token.name, rotation = %r.id, "{why}");
    d.audit.record(
        (d.now)(),
        AuditEvent::RevokeRefused,
        serde_json::json!({"token": d.token.name, "rotation": r.id, "fingerprint": token.fingerprint().to_string(), "reason": why}),
    );
    Err(why)
}

/// Records that a refresh or mint call is about to leave, before it does.
fn mark_sent(d: &Deps<'_>, r: &mut Rotation) {
    if r.obtain_sent {
        tracing::warn!(token = %d.token.name, rotation = %r.id, "an earlier obtain call of this rotation was interrupted before its token was stored; asking Meta again");
    }
    r.obtain_sent = true;
    if let Err(e) = d.log.save(r) {
        tracing::error!(error = %e, "cannot save the rotation record");
    }
}

/// Inspects `token` as a candidate: `debug_token`, then (if valid) the phone read.
pub async fn inspect_candidate(
    state_dir: &Path,
    graph: &GraphClient,
    t: &TokenConfig,
    token: &Secret,
) -> Result<CandidateReport, GraphError> {
    if !t.kind.debug_token() {
        // The kind's `GET /me` is both the inspection and the proof.
        let info = crate::observe::inspect(state_dir, t, graph, token).await?;
        let invalid = info.invalid_reason().map(|a| graph::dead_reason(&a));
        let usability = match info.invalid_reason() {
            Some(api) => crate::usable::Usability::Dead(api),
            None => crate::usable::Usability::Usable,
        };
        return Ok(CandidateReport {
            invalid,
            facts: crate::graph::facts_of(token, &info),
            usability,
        });
    }
    let info = match graph.debug_token(token).await {
        Ok(i) => i,
        // Code 100 on `debug_token` is Meta refusing this app's view of the token: for the
        // current token it points at tokenwarden's config, but a candidate that gets it
        // belongs to another app. (A wrong app secret is code 190 and stays an error.)
        Err(GraphError::OwnCredentials(api)) if api.code == 100 => {
            return Ok(CandidateReport {
                invalid: Some(format!("it belongs to another app ({})", api.message)),
                facts: TokenFacts {
                    fingerprint: token.fingerprint(),
                    app_id: None,
                    application: None,
                    token_type: None,
                    expires: Expires::Unknown,
                    data_access_expires_at: None,
                    issued_at: None,
                    scopes: Vec::new(),
                    wabas: Vec::new(),
                },
                usability: crate::usable::Usability::Unusable("it belongs to another app".into()),
            });
        }
        Err(e) => return Err(e),
    };
    let facts = crate::graph::facts_of(token, &info);
    let invalid = info.invalid_reason().map(|a| graph::dead_reason(&a));
    let (proof, usability) = crate::observe::prove(graph, t, token, &info).await;
    // A read that could not be made says nothing about the candidate: try again later
    // rather than reject it.
    for read in [
        proof.waba.as_ref().and_then(|r| r.as_ref().err()),
        proof.phone.as_ref().and_then(|r| r.as_ref().err()),
        proof.page.as_ref().and_then(|r| r.as_ref().err()),
        proof.subscribed.as_ref().and_then(|r| r.as_ref().err()),
    ]
    .into_iter()
    .chain(proof.ad_accounts.iter().map(|(_, r)| r.as_ref().err()))
    .flatten()
    {
        if matches!(
            read,
            GraphError::Transient(_) | GraphError::OwnCredentials(_)
        ) {
            return Err(read.clone());
        }
    }
    Ok(CandidateReport {
        invalid,
        facts,
        usability,
    })
}

/// What is expected of a successor of `t` whose current token has `current` facts.
pub fn expectations<'a>(
    cfg: &'a Config,
    t: &'a TokenConfig,
    current: Option<&'a TokenFacts>,
) -> Expectations<'a> {
    Expectations {
        // Instagram and Threads tokens belong to their product's own app, which no Graph
        // inspection names: the app check is Graph's only.
        app_id: t.kind.debug_token().then_some(cfg.meta.app_id.as_str()),
        token_type: t.kind.token_type().unwrap_or(super::SYSTEM_USER),
        expiry_reported: t.kind.debug_token(),
        current,
        max_age: t.policy.max_age,
    }
}

/// The current token's facts, or `None` when Meta calls it invalid (any valid successor is
/// then better).
pub async fn current_facts(
    state_dir: &Path,
    t: &TokenConfig,
    graph: &GraphClient,
    token: &Secret,
) -> Result<Option<TokenFacts>, GraphError> {
    let info = crate::observe::inspect(state_dir, t, graph, token).await?;
    Ok(info
        .invalid_reason()
        .is_none()
        .then(|| crate::graph::facts_of(token, &info)))
}

async fn validate(d: &Deps<'_>, r: &mut Rotation) -> Event {
    let Some(new) = r.new.clone() else {
        return Event::Failed("no candidate was recorded".into());
    };
    let (candidate, current) = match candidate_and_current(d, r, &new).await {
        Ok(pair) => pair,
        Err(ev) => return ev,
    };
    if candidate.fingerprint() == current.fingerprint() || is_previous(d, &candidate).await {
        // The "successor" is a token already in use (Meta's refresh handed it back, or it
        // was staged again): never promote, deliver or revoke it; only unlabel the copy.
        if let Err(e) = d.store.clear_pending().await {
            tracing::warn!(token = %d.token.name, error = %e, "cannot unstage the copy of the current token");
        }
        return extended_in_place(d, r, &candidate).await;
    }
    let current = match current_facts(&d.cfg.state_dir, d.token, d.graph, &current).await {
        Ok(f) => f,
        Err(e) => return graph_event("inspecting the current token", e),
    };
    let report = match inspect_candidate(&d.cfg.state_dir, d.graph, d.token, &candidate).await {
        Ok(c) => c,
        Err(e) => return graph_event("inspecting the candidate", e),
    };
    match super::judge(&report, &expectations(d.cfg, d.token, current.as_ref())) {
        Ok(()) => Event::Validated(report.facts),
        Err(check) => {
            // A token this rotation asked Meta for and will not use must not stay alive
            // unused: revoke it (best effort; a person's staged token is theirs to keep).
            if report.invalid.is_none() {
                revoke_own_candidate(d, r, &candidate).await;
            }
            // Unlabel the candidate so it is not tried again; the version itself is kept
            // (Secrets Manager keeps it unlabelled) for a person to look at.
            if let Err(e) = d.store.clear_pending().await {
                tracing::warn!(token = %d.token.name, error = %e, "cannot unstage the rejected candidate");
            }
            Event::Rejected(check)
        }
    }
}

/// Cleans up after a rotation another instance overtook: if this rotation's candidate is still
/// staged, unstage it; if this rotation asked Meta for it, revoke it and confirm (nobody will
/// use it). The candidate is read by its version id, so it is found even after another
/// instance moved `AWSPENDING` to its own candidate (the race that used to leave live tokens
/// nobody tracked). The revoke is refused if the candidate became current after all.
async fn abandon_candidate(d: &Deps<'_>, r: &Rotation) {
    let Some(new) = &r.new else { return };
    if matches!(d.store.pending().await, Ok(Some((v, _))) if v.0 == new.version)
        && let Err(e) = d.store.clear_pending().await
    {
        tracing::warn!(token = %d.token.name, error = %e, "cannot unstage the abandoned candidate");
    }
    if !made_here(r) {
        return;
    }
    // Another instance may have adopted our candidate and be about to promote it: revoking
    // it now would kill the token about to become current. Wait until the race is decided
    // (`AWSCURRENT` moved off the version this rotation replaces); from then on our version
    // can never become current (a promotion is a compare-and-swap from that version).
    let decided = race_decided(d, r).await;
    let token = match d.store.version(&VersionId(new.version.clone())).await {
        Ok(Some(token)) => token,
        Ok(None) => {
            tracing::warn!(token = %d.token.name, version = %new.version, fingerprint = %new.fingerprint, "the abandoned candidate is gone from the store; it cannot be revoked here and expires on its own");
            return;
        }
        Err(e) => {
            tracing::warn!(token = %d.token.name, error = %e, fingerprint = %new.fingerprint, "cannot read the abandoned candidate to revoke it; it expires on its own");
            return;
        }
    };
    match decided {
        // Adopted by another instance and made current: in use, kept.
        Some(current) if current.fingerprint() == token.fingerprint() => {
            tracing::info!(token = %d.token.name, fingerprint = %token.fingerprint(), "the candidate this rotation made became current through another instance; kept");
        }
        Some(_) => revoke_own_candidate(d, r, &token).await,
        None => {
            tracing::warn!(token = %d.token.name, fingerprint = %token.fingerprint(), "another rotation of this token is still undecided; the abandoned candidate is not revoked (another instance may promote it) and expires on its own if nobody does");
            d.audit.record(
                (d.now)(),
                AuditEvent::CandidateLeft,
                serde_json::json!({"token": d.token.name, "rotation": r.id, "fingerprint": token.fingerprint().to_string()}),
            );
        }
    }
}

/// How long an overtaken rotation waits for the other one to promote before it decides what
/// to do with the candidate it made.
const RACE_WAIT: Duration = Duration::from_secs(20);

/// The store's current token once it is no longer the version `r` replaces (the race between
/// instances is decided), polling for up to [`RACE_WAIT`]; `None` if it is still undecided.
async fn race_decided(d: &Deps<'_>, r: &Rotation) -> Option<Secret> {
    let started = std::time::Instant::now();
    loop {
        match d.store.current_version().await {
            Ok((v, current)) if v.0 != r.old.version => return Some(current),
            _ if started.elapsed() >= RACE_WAIT => return None,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Whether this rotation's candidate is a token it asked Meta for (mint or refresh), as
/// opposed to one a person or another instance staged: its version id is the rotation id.
fn made_here(r: &Rotation) -> bool {
    r.source != Origin::Staged && r.new.as_ref().is_some_and(|n| n.version == r.id)
}

/// The recorded candidate and the token it replaces, both still where the rotation left
/// them; or why this rotation must stop.
async fn candidate_and_current(
    d: &Deps<'_>,
    r: &Rotation,
    new: &Side,
) -> Result<(Secret, Secret), Event> {
    let candidate = candidate_or_superseded(d, r, new).await?;
    match d.store.current_version().await {
        Ok((v, s)) if v.0 == r.old.version => Ok((candidate, s)),
        Ok((v, _)) => Err(Event::Superseded(format!(
            "the store's current version is now {v}, not {}",
            r.old.version
        ))),
        Err(e) => Err(store_event(e)),
    }
}

/// Revokes a candidate this rotation asked Meta for and will not use (nobody else knows it),
/// then confirms with `debug_token` that Meta calls it invalid; best effort: it expires on its
/// own otherwise, and the log and the audit log say so. A person's staged token is theirs to
/// keep.
async fn revoke_own_candidate(d: &Deps<'_>, r: &Rotation, token: &Secret) {
    if r.source == Origin::Staged {
        return;
    }
    if let Err(why) = revoke_allowed(d, r, token).await {
        tracing::warn!(token = %d.token.name, "{why}; the unused candidate is left to expire");
        return;
    }
    let revoked = match d.graph.revoke_token(token, token).await {
        // Already dead: nothing left to revoke.
        Ok(()) | Err(GraphError::TokenDead(_)) => true,
        Err(e) => {
            tracing::warn!(token = %d.token.name, error = %e, fingerprint = %token.fingerprint(), "cannot revoke an unused candidate; it expires on its own");
            false
        }
    };
    let confirmed = revoked
        && matches!(d.graph.debug_token(token).await, Ok(info) if info.invalid_reason().is_some());
    if revoked && !confirmed {
        tracing::warn!(token = %d.token.name, fingerprint = %token.fingerprint(), "Meta does not confirm the unused candidate is revoked; revoke it in Business Manager if it stays valid");
    }
    d.audit.record(
        (d.now)(),
        AuditEvent::CandidateRevoked,
        serde_json::json!({"token": d.token.name, "rotation": r.id, "fingerprint": token.fingerprint().to_string(), "revoked": revoked, "confirmed": confirmed}),
    );
}

/// The recorded candidate, still staged; or why this rotation must stop. Another candidate
/// staged meanwhile, or another version made current, means another tokenwarden instance (or a
/// person) is rotating this token: this rotation stops without touching anything
/// ([`Event::Superseded`]), so two instances never push two different tokens.
async fn candidate_or_superseded(d: &Deps<'_>, r: &Rotation, new: &Side) -> Result<Secret, Event> {
    match d.store.pending().await {
        Ok(Some((v, s))) if v.0 == new.version => return Ok(s),
        Ok(Some((v, _))) => {
            return Err(Event::Superseded(format!(
                "another candidate (version {v}) was staged in {} meanwhile",
                d.store.describe()
            )));
        }
        Ok(None) => {}
        Err(e) => return Err(store_event(e)),
    }
    match d.store.current_version().await {
        Ok((v, _)) if v.0 != r.old.version => Err(Event::Superseded(format!(
            "version {v} became current meanwhile (another tokenwarden instance or a person)"
        ))),
        Ok(_) => Err(Event::Failed(format!(
            "the candidate (version {}) is no longer staged in {}",
            new.version,
            d.store.describe()
        ))),
        Err(e) => Err(store_event(e)),
    }
}

/// The rotation record as the [`crate::target::ReloadJournal`] of its delivery: each mark is
/// saved to `rotations/<token>.json` at once (the rotation's lock is held by `drive`), so a
/// kill while a reload runs leaves "started" without "finished" for the resume to see.
#[derive(Debug)]
struct RecordedReloads {
    record: std::sync::Mutex<Rotation>,
    log: RotationLog,
}

impl crate::target::ReloadJournal for RecordedReloads {
    fn unfinished(&self, target: &str) -> bool {
        let r = self.record.lock().expect("not poisoned");
        r.reloads.get(target).is_some_and(|m| m.finished.is_none())
    }

    fn started(&self, target: &str) -> Result<(), crate::target::TargetError> {
        let mut r = self.record.lock().expect("not poisoned");
        r.reloads.insert(
            target.to_string(),
            super::ReloadMark {
                started: jiff::Timestamp::now(),
                finished: None,
            },
        );
        self.log.save(&r).map_err(|e| {
            crate::target::TargetError::Transient(format!(
                "cannot record that the reload starts: {e}"
            ))
        })?;
        Ok(())
    }

    fn finished(&self, target: &str) {
        let mut r = self.record.lock().expect("not poisoned");
        if let Some(m) = r.reloads.get_mut(target) {
            m.finished = Some(jiff::Timestamp::now());
        }
        if let Err(e) = self.log.save(&r) {
            // The reload ran; at worst a resume runs it once more.
            tracing::warn!(target = %target, error = %e, "cannot record that the reload finished");
        }
    }
}

async fn deliver(d: &Deps<'_>, r: &mut Rotation) -> Event {
    if d.token.targets.is_empty() {
        return Event::Delivered;
    }
    let Some(new) = r.new.clone() else {
        return Event::Failed("no candidate was recorded".into());
    };
    let (candidate, old) = match candidate_and_current(d, r, &new).await {
        Ok(pair) => pair,
        Err(ev) => return ev,
    };
    let targets = match crate::target::open_all(d.token).await {
        Ok(t) => t,
        Err((name, e)) => return Event::DeliveryFailed(format!("target {name}: {e}")),
    };
    let expires_at = r
        .new_facts
        .as_ref()
        .and_then(|f| crate::policy::effective_expiry(f, None))
        .map(|e| e.at);
    let journal = std::sync::Arc::new(RecordedReloads {
        record: std::sync::Mutex::new(r.clone()),
        log: d.log.clone(),
    });
    let ctx = crate::target::PushContext {
        token_name: d.token.name.clone(),
        expires_at,
        event: PushEvent::Rotation,
        request_id: r.id.clone(),
        now: (d.now)(),
        reloads: Some(journal.clone()),
        hide: vec![old.clone()],
    };
    let http = crate::target::http_client();
    let rollout = crate::delivery::roll_out(
        &targets,
        &candidate,
        Some(&old),
        &ctx,
        &http,
        d.cfg.delivery.parallelism,
    )
    .await;
    drop(ctx);
    r.reloads = journal.record.lock().expect("not poisoned").reloads.clone();
    // A target that refused (rather than failed for now) needs a person; say so.
    r.needs_fix = match &rollout {
        crate::delivery::Rollout::Failed {
            target, results, ..
        } => results.iter().any(|res| {
            &res.name == target
                && matches!(res.outcome, Err(crate::target::TargetError::Refused(_)))
        }),
        crate::delivery::Rollout::Delivered(_) => false,
    };
    record_rollout(d, &targets, &rollout, &candidate, &old)
}

/// Records what a rollout did, in the target log and the audit log, and turns it into the
/// rotation's event: delivered, or a failed delivery naming the target and what was put back.
fn record_rollout(
    d: &Deps<'_>,
    targets: &[std::sync::Arc<crate::target::Configured>],
    rollout: &crate::delivery::Rollout,
    candidate: &Secret,
    old: &Secret,
) -> Event {
    let log = crate::delivery::TargetLog::new(&d.cfg.state_dir);
    let mut records = log.load_or_empty(&d.token.name);
    let now = (d.now)();
    let results = match rollout {
        crate::delivery::Rollout::Delivered(results)
        | crate::delivery::Rollout::Failed { results, .. } => results,
    };
    crate::delivery::record(
        &mut records,
        targets,
        results,
        candidate.fingerprint(),
        PushEvent::Rotation,
        now,
    );
    let event = match rollout {
        crate::delivery::Rollout::Delivered(results) => {
            for res in results {
                d.audit.record(now, AuditEvent::Push, serde_json::json!({"token": d.token.name, "target": res.name, "wave": res.wave, "fingerprint": candidate.fingerprint().to_string(), "changed": res.outcome.as_ref().ok(), "event": PushEvent::Rotation}));
            }
            Event::Delivered
        }
        crate::delivery::Rollout::Failed {
            target,
            reason,
            results,
            restored,
            restore_failed,
        } => {
            for name in restored {
                if let Some(rec) = records.get_mut(name) {
                    rec.fingerprint = Some(old.fingerprint());
                    rec.event = Some(PushEvent::Rollback);
                }
            }
            for res in results {
                d.audit.record(now, AuditEvent::Push, serde_json::json!({"token": d.token.name, "target": res.name, "wave": res.wave, "fingerprint": candidate.fingerprint().to_string(), "error": res.outcome.as_ref().err().map(|e| e.to_string()), "event": PushEvent::Rotation}));
            }
            d.audit.record(now, AuditEvent::RollbackPush, serde_json::json!({"token": d.token.name, "fingerprint": old.fingerprint().to_string(), "restored": restored, "failed": restore_failed}));
            let mut msg = format!("target {target} failed: {reason}");
            if !restored.is_empty() {
                msg.push_str(&format!(
                    "; the old token was put back on {}",
                    restored.join(", ")
                ));
            }
            if !restore_failed.is_empty() {
                let names: Vec<String> = restore_failed
                    .iter()
                    .map(|(n, e)| format!("{n} ({e})"))
                    .collect();
                msg.push_str(&format!("; putting it back failed on {}", names.join(", ")));
            }
            Event::DeliveryFailed(msg)
        }
    };
    if let Err(e) = log.save(&d.token.name, &records) {
        tracing::error!(token = %d.token.name, error = %e, "cannot save the target records");
    }
    event
}

async fn promote(d: &Deps<'_>, r: &mut Rotation) -> Event {
    let Some(new) = r.new.clone() else {
        return Event::Failed("no candidate was recorded".into());
    };
    let (to, from) = (
        VersionId(new.version.clone()),
        VersionId(r.old.version.clone()),
    );
    match d.store.promote(&to, &from).await {
        Ok(()) => Event::Promoted,
        Err(StoreError::Conflict { detail, .. }) => match d.store.current_version().await {
            // Promoted before a crash, or by a twin instance running the same rotation.
            Ok((v, _)) if v == to => Event::Promoted,
            Ok((v, _)) => Event::Superseded(format!(
                "version {v} became current first ({detail}); the old token stays current"
            )),
            Err(e) => store_event(e),
        },
        Err(e) => store_event(e),
    }
}

/// The old token, read back from the store's `AWSPREVIOUS`, once it is certain that the new
/// version is still current (revoking after a rollback would cut off the live token).
async fn old_token(d: &Deps<'_>, r: &Rotation) -> Result<Secret, Event> {
    let new = r.new.clone().expect("promoted rotations have a candidate");
    match d.store.current_version().await {
        Ok((v, _)) if v.0 == new.version => {}
        Ok((v, _)) => {
            return Err(Event::Failed(format!(
                "the store's current version changed to {v} after promotion (a rollback?); the old token was left alone"
            )));
        }
        Err(e) => return Err(store_event(e)),
    }
    match d.store.previous().await {
        Ok(Some((v, s))) if v.0 == r.old.version => Ok(s),
        Ok(_) => Err(Event::Failed(format!(
            "the old version {} is no longer in {}; revoke the token with fingerprint {} in Business Manager",
            r.old.version,
            d.store.describe(),
            r.old.fingerprint
        ))),
        Err(e) => Err(store_event(e)),
    }
}

async fn revoke(d: &Deps<'_>, r: &mut Rotation) -> Event {
    let old = match old_token(d, r).await {
        Ok(s) => s,
        Err(ev) => return ev,
    };
    // A copy of the old token outside the managed targets would break when it is revoked:
    // hold the revoke while any remains.
    if !d.cfg.delivery.scan.roots.is_empty() {
        let managed: Vec<std::path::PathBuf> = d
            .cfg
            .tokens
            .iter()
            .flat_map(|t| t.targets.iter())
            .filter_map(|t| match &t.kind {
                crate::config::TargetKind::Dotenv { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        let scan = d.cfg.delivery.scan.clone();
        let token = old.clone();
        let found =
            tokio::task::spawn_blocking(move || crate::scan::find_copies(&scan, &token, &managed))
                .await
                .unwrap_or_default();
        d.audit.record((d.now)(), AuditEvent::Scan, serde_json::json!({"token": d.token.name, "fingerprint": r.old.fingerprint.to_string(), "scanned": found.scanned, "copies": found.copies, "truncated": found.truncated}));
        if !found.copies.is_empty() {
            return Event::CopiesRemain(format!(
                "the old token (fingerprint {}) is still in {}",
                r.old.fingerprint,
                crate::scan::list(&found.copies)
            ));
        }
    }
    let caller = match d.store.current().await {
        Ok(s) => s,
        Err(e) => return store_event(e),
    };
    if let Err(why) = revoke_allowed(d, r, &old).await {
        return Event::Failed(why);
    }
    match d.graph.revoke_token(&old, &caller).await {
        Ok(()) => Event::Revoked,
        // Already dead (it expired or was revoked by hand): nothing left to revoke.
        Err(GraphError::TokenDead(_)) => Event::Revoked,
        Err(e) => graph_event("revoking the old token", e),
    }
}

async fn verify_revoked(d: &Deps<'_>, r: &mut Rotation) -> Event {
    let old = match old_token(d, r).await {
        Ok(s) => s,
        Err(ev) => return ev,
    };
    match d.graph.debug_token(&old).await {
        Ok(info) if info.invalid_reason().is_some() => Event::RevokeConfirmed,
        Ok(_) if r.attempts + 1 >= VERIFY_ATTEMPTS => Event::Failed(format!(
            "Meta still calls the old token (fingerprint {}) valid after the revoke; revoke it in Business Manager",
            r.old.fingerprint
        )),
        Ok(_) => Event::Transient("Meta still calls the old token valid; checking again".into()),
        Err(e) => graph_event("inspecting the old token", e),
    }
}

/// The parts of `r` its email tells, in the shape [`crate::alert::render_rotation`] takes (the
/// words of email do not import rotation's types, so the module graph keeps no cycle).
fn mail_facts<'a>(
    r: &'a Rotation,
    t: &TokenConfig,
    now: Timestamp,
) -> crate::alert::RotationFacts<'a> {
    use crate::alert::RotationEnd as End;
    let end = match &r.outcome {
        None => End::Running,
        Some(Outcome::Completed { .. }) => End::Completed,
        Some(Outcome::Rejected { check }) => End::Rejected { check },
        Some(Outcome::Failed { step, reason }) => End::Failed {
            step: step.word(),
            promoted: matches!(step, Step::Revoke | Step::VerifyRevoked),
            reason,
        },
        Some(Outcome::Extended { until }) => End::Extended { until: *until },
        Some(Outcome::Superseded { detail }) => End::Superseded { detail },
    };
    crate::alert::RotationFacts {
        id: &r.id,
        source: r.source.to_string(),
        reason: &r.reason,
        started: r.started,
        old_fingerprint: &r.old.fingerprint,
        old_version: &r.old.version,
        new_fingerprint: r.new.as_ref().map(|s| &s.fingerprint),
        new_facts: r.new_facts.as_ref(),
        revoke_at: r.revoke_at,
        last_error: r.last_error.as_deref(),
        end,
        now,
        new_due: r
            .new_facts
            .as_ref()
            .and_then(|f| crate::rotation::due_at(t, f)),
    }
}

/// Queues the email a step deserves: one on promotion (success) and one when a rotation ends
/// badly. Ids come from the rotation id, so a replay after a crash queues nothing new.
fn notify(d: &Deps<'_>, r: &Rotation, step: Step, mail: Option<Mail>) {
    let mail = match (mail, &r.outcome, r.step) {
        (Some(m), _, _) => m,
        (None, _, Progress::Next(Step::Revoke)) if step == Step::Promote => Mail::Promoted,
        (None, Some(Outcome::Completed { .. }), _) if step == Step::Promote => Mail::Promoted,
        (None, Some(Outcome::Rejected { .. }), _) => Mail::Rejected,
        (None, Some(Outcome::Failed { .. }), _) => Mail::Failed,
        (None, Some(Outcome::Extended { .. }), _) => Mail::Extended,
        _ => return,
    };
    // One email per rotation and kind; for remaining copies, one per set of files found. A
    // failure is told once per token version and reason, whichever rotation met it: the same
    // failure retried daily (a login only a person can renew) is the token's own alert's to
    // repeat, not a new email each day (the queues keep a sent id for 30 days).
    let id = match (mail, &r.outcome) {
        (Mail::CopiesRemain, _) => format!(
            "rotation-{}-{}-{}",
            r.id,
            mail.word(),
            crate::secret::Fingerprint::of(r.last_error.as_deref().unwrap_or_default())
        ),
        (Mail::Failed, Some(Outcome::Failed { step, reason })) => format!(
            "rotation-{}-{}-{}",
            mail.word(),
            r.old.fingerprint,
            crate::secret::Fingerprint::of(&format!("{}: {reason}", step.word()))
        ),
        _ => format!("rotation-{}-{}", r.id, mail.word()),
    };
    let rendered = crate::alert::render_rotation(
        d.token,
        &mail_facts(r, d.token, (d.now)()),
        &store_hint(d.token),
        mail,
    );
    use crate::channel::{Severity, Status, family};
    // A rotation that ends well is news that ends an open rotation failure; one that ends
    // badly is a condition until a later rotation succeeds.
    let (severity, status, resolves): (_, _, &[&str]) = match mail {
        Mail::Promoted | Mail::Extended => (Severity::Info, Status::Notice, &[family::ROTATION]),
        Mail::CopiesRemain => (Severity::Warning, Status::Notice, &[]),
        Mail::Rejected | Mail::Failed | Mail::DeliveryFailed => {
            (Severity::Error, Status::Firing, &[])
        }
    };
    let signal = crate::channel::Signal {
        family: family::ROTATION,
        severity,
        status,
        state: &rendered.summary.word.clone(),
        fingerprint: Some(r.old.fingerprint),
        resolves,
    };
    let _ = crate::notify::queue(
        d.sinks,
        d.audit,
        crate::notify::email_id(&d.token.name, &id),
        &d.token.name,
        rendered,
        &signal,
        "rotation email",
        (d.now)(),
    );
}

/// How a person puts the next token in place for `t`.
pub fn store_hint(t: &TokenConfig) -> String {
    format!(
        "`tokenwarden stage --token {}` (paste the token on standard input; it is checked with Meta before it is staged)",
        t.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{RotationEnd, RotationMail};
    use crate::secret::Fingerprint;

    /// The email's words live in `alert`, the judgement of what a failed step means stays
    /// here: a failure while retiring the old token comes after the promotion (the new token
    /// is current), any earlier one leaves the old token untouched.
    #[test]
    fn a_failed_step_is_told_before_or_after_the_promotion() {
        let text =
            "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"prod\"\n";
        let cfg = crate::config::parse(Path::new("t.toml"), text).expect("valid config");
        let t = &cfg.tokens[0];
        for (step, promoted) in [
            (Step::Obtain, false),
            (Step::Deliver, false),
            (Step::Promote, false),
            (Step::Revoke, true),
            (Step::VerifyRevoked, true),
        ] {
            let old = Side {
                version: "v1".into(),
                fingerprint: Fingerprint::of("old"),
            };
            let mut r = Rotation::begin(
                "r".repeat(32),
                "prod",
                crate::rotation::Origin::Mint,
                "due".into(),
                old,
                Timestamp::UNIX_EPOCH,
            );
            r.outcome = Some(Outcome::Failed {
                step,
                reason: "Meta said no".into(),
            });
            let facts = mail_facts(&r, t, Timestamp::UNIX_EPOCH);
            assert_eq!(
                facts.end,
                RotationEnd::Failed {
                    step: step.word(),
                    promoted,
                    reason: "Meta said no"
                }
            );
            let mail = crate::alert::render_rotation(t, &facts, "stage it", RotationMail::Failed);
            assert!(
                mail.subject
                    .contains(&format!("{} failed: Meta said no", step.word())),
                "{}",
                mail.subject
            );
            assert_eq!(
                mail.text
                    .contains("is current, but retiring the old one failed at step"),
                promoted,
                "{step:?}: {}",
                mail.text
            );
            assert_eq!(
                mail.text
                    .contains("The old token is still current and untouched"),
                !promoted
            );
        }
    }
}
