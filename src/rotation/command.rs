//! The rotation commands a person runs: `rotate` (with `--dry-run`), `rollback`, `stage`.
//!
//! Each returns its text for standard output and an exit code, so `main` stays a thin
//! dispatcher: 0 done, 1 refused or failed (the message says why), 75 try again later (a
//! transient failure or another process rotating), 65 a wrongly pasted value.

use jiff::Timestamp;

use super::run::{self, Deps, Report, RotationLog};
use super::{Outcome, Side};
use crate::audit::{Audit, AuditEvent};
use crate::config::{Config, Source, TokenConfig};
use crate::graph::{GraphClient, GraphError};
use crate::notify::{Mailer, Outbox};
use crate::secret::Secret;
use crate::store::{SecretStore, Store, StoreError};
use crate::timefmt;

/// Exit code for "try again later" (sysexits' EX_TEMPFAIL).
pub const EXIT_TEMPFAIL: u8 = 75;
/// Exit code for a wrongly pasted value (sysexits' EX_DATAERR).
pub const EXIT_DATAERR: u8 = 65;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Text for standard output.
    pub text: String,
    /// The process exit code.
    pub code: u8,
}

impl Done {
    fn new(text: String, code: u8) -> Done {
        Done { text, code }
    }
}

/// Why a command could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The store cannot be used: fix it and run again.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The state directory cannot be used: fix it and run again.
    #[error("{0}")]
    Rotate(#[from] run::RotateError),
    /// A secret the config references cannot be read, or email cannot be set up: fix the config.
    #[error("{0}")]
    Config(String),
}

/// Shared setup: the store, the records, the audit log and (with `[email]`) the outbox.
struct Setup {
    store: Store,
    log: RotationLog,
    audit: Audit,
    outbox: Option<(Outbox, Mailer)>,
    channels: crate::channel::Channels,
}

async fn setup(cfg: &Config, t: &TokenConfig) -> Result<Setup, CommandError> {
    let store = Store::open(&t.store, &t.name, &cfg.state_dir).await?;
    let outbox = match &cfg.email {
        None => None,
        Some(e) => {
            let mailer =
                Mailer::new(e).map_err(|e| CommandError::Config(format!("[email]: {e}")))?;
            let outbox = Outbox::open(&cfg.state_dir).map_err(|e| {
                CommandError::Config(format!(
                    "cannot open the outbox in `{}`: {e}",
                    cfg.state_dir.display()
                ))
            })?;
            Some((outbox, mailer))
        }
    };
    let channels = crate::channel::Channels::open(&cfg.state_dir, &cfg.receivers)
        .map_err(|e| CommandError::Config(format!("[[receiver]]: {e}")))?;
    Ok(Setup {
        store,
        log: RotationLog::new(&cfg.state_dir),
        audit: Audit::new(&cfg.state_dir).with_limits(cfg.audit),
        outbox,
        channels,
    })
}

/// `tokenwarden rotate --token NAME`: starts a rotation now (or resumes the one in progress)
/// and takes it as far as it goes: up to the grace period before the old token is revoked.
///
/// # Errors
/// [`CommandError`] when the store, the state directory or the email setup is unusable.
pub async fn rotate(
    cfg: &Config,
    graph: &GraphClient,
    t: &TokenConfig,
    now: &(dyn Fn() -> Timestamp + Sync),
) -> Result<Done, CommandError> {
    let s = setup(cfg, t).await?;
    let deps = Deps {
        cfg,
        token: t,
        graph,
        store: &s.store,
        log: &s.log,
        audit: &s.audit,
        sinks: crate::notify::Sinks {
            outbox: s.outbox.as_ref().map(|(o, _)| o),
            channels: &s.channels,
            except: None,
        },
        now,
    };
    let report = run::drive(&deps, Some("requested with `tokenwarden rotate`".into())).await?;
    if let Some((outbox, mailer)) = &s.outbox {
        let r = outbox.flush(mailer, now()).await;
        for (id, e) in &r.failed {
            tracing::warn!(email = %id, error = %e, "email not delivered; the daemon retries it from the outbox");
        }
    }
    let (reports, _) = s.channels.flush(&crate::target::http_client(), now()).await;
    for (receiver, r) in &reports {
        for (id, e) in &r.failed {
            tracing::warn!(receiver = %receiver, alert = %id, error = %e, "alert not delivered; the daemon retries it from the receiver's queue");
        }
    }
    Ok(describe_report(t, &report, now()))
}

/// Words and exit code for a [`Report`].
pub fn describe_report(t: &TokenConfig, report: &Report, now: Timestamp) -> Done {
    let name = &t.name;
    match report {
        Report::Idle(why) => Done::new(format!("{name}: no rotation: {why}\n"), 1),
        Report::Busy => Done::new(
            format!(
                "{name}: another tokenwarden process is rotating this token right now; try again in a minute\n"
            ),
            EXIT_TEMPFAIL,
        ),
        Report::Stalled(r) if r.needs_fix => Done::new(
            format!(
                "{name}: rotation {} stopped at step {}: a target refused the new token: {}\nFix that target as the message says; the old token stays current meanwhile. The rotation resumes on the next run after the fix (the daemon's schedule, or `tokenwarden rotate --token {name}`).\n",
                r.id,
                r.step.word(),
                r.last_error.as_deref().unwrap_or("unknown")
            ),
            1,
        ),
        Report::Stalled(r) => Done::new(
            format!(
                "{name}: rotation {} stopped at step {} after a temporary failure: {}\nIt resumes on the next run (the daemon's schedule, or `tokenwarden rotate --token {name}`).\n",
                r.id,
                r.step.word(),
                r.last_error.as_deref().unwrap_or("unknown")
            ),
            EXIT_TEMPFAIL,
        ),
        Report::Waiting(r) => Done::new(
            format!(
                "{name}: rotated. The new token (fingerprint {}) is current; the old one (fingerprint {}) will be revoked at {} ({} from now), after the grace period.\nThe daemon does that; so does `tokenwarden rotate --token {name}` run after that time.\n",
                r.new
                    .as_ref()
                    .map(|s| s.fingerprint.to_string())
                    .unwrap_or_default(),
                r.old.fingerprint,
                r.revoke_at.map(timefmt::utc).unwrap_or_default(),
                timefmt::span(
                    r.revoke_at
                        .map(|a| a.as_second() - now.as_second())
                        .unwrap_or(0)
                ),
            ),
            0,
        ),
        Report::Finished(r) => match &r.outcome {
            Some(Outcome::Completed { revoked: true }) => Done::new(
                format!(
                    "{name}: rotation {} complete: the new token (fingerprint {}) is current and the old one (fingerprint {}) is revoked.\n",
                    r.id,
                    r.new
                        .as_ref()
                        .map(|s| s.fingerprint.to_string())
                        .unwrap_or_default(),
                    r.old.fingerprint
                ),
                0,
            ),
            Some(Outcome::Completed { revoked: false }) => Done::new(
                format!(
                    "{name}: rotation {} complete: the new token (fingerprint {}) is current; the old one is kept ({}).\n",
                    r.id,
                    r.new
                        .as_ref()
                        .map(|s| s.fingerprint.to_string())
                        .unwrap_or_default(),
                    if t.kind.revocable() {
                        "revoke_after = \"never\"".to_string()
                    } else {
                        format!(
                            "Meta offers no revoke for {} tokens: it stays valid until its own end",
                            t.kind
                        )
                    }
                ),
                0,
            ),
            Some(Outcome::Rejected { check }) => Done::new(
                format!(
                    "{name}: the candidate was rejected: {check}\nThe current token is untouched.\n"
                ),
                1,
            ),
            Some(Outcome::Failed { step, reason }) => Done::new(
                format!(
                    "{name}: rotation failed at step {}: {reason}\n",
                    step.word()
                ),
                1,
            ),
            // Another process rotated it: try again later (75, EX_TEMPFAIL), when this
            // instance will see the new token as current.
            Some(Outcome::Superseded { detail }) => Done::new(
                format!("{name}: rotation stopped: another process rotated it ({detail})\n"),
                75,
            ),
            Some(Outcome::Extended { until: Some(until) }) => Done::new(
                format!(
                    "{name}: extended in place: Meta handed back the current token (fingerprint {}) valid until {}; nothing was promoted, delivered or revoked.\n",
                    r.old.fingerprint,
                    timefmt::utc(*until)
                ),
                0,
            ),
            Some(Outcome::Extended { until: None }) => Done::new(
                format!(
                    "{name}: unchanged: Meta handed back the current token (fingerprint {}) with no expiry to extend (it does not expire); nothing was promoted, delivered or revoked, and the daemon does not ask again for this token while it is current.\n",
                    r.old.fingerprint
                ),
                0,
            ),
            None => Done::new(format!("{name}: rotation {} finished\n", r.id), 0),
        },
    }
}

/// `tokenwarden rotate --token NAME --dry-run`: every step the rotation would take, with the
/// candidate (if one is staged) checked against Meta. Reads only: nothing is written, minted
/// or sent.
///
/// # Errors
/// [`CommandError`] when the store cannot be read.
pub async fn dry_run(
    cfg: &Config,
    graph: &GraphClient,
    t: &TokenConfig,
    now: Timestamp,
) -> Result<Done, CommandError> {
    let store = Store::open(&t.store, &t.name, &cfg.state_dir).await?;
    let log = RotationLog::new(&cfg.state_dir);
    let name = &t.name;
    let mut out = format!("{name}: dry run; nothing is changed\n");
    if let Some(r) = log.load(name).map_err(run::RotateError::from)?
        && r.is_active()
    {
        out.push_str(&format!(
            "  A rotation is in progress ({}, started {}) at step {}: `tokenwarden rotate --token {name}` resumes it.\n",
            r.id,
            timefmt::utc(r.started),
            r.step.word()
        ));
        return Ok(Done::new(out, 0));
    }
    let (cur_v, current) = store.current_version().await?;
    let facts = match run::current_facts(&cfg.state_dir, t, graph, &current).await {
        Ok(f) => f,
        Err(e) => {
            out.push_str(&format!("  Cannot inspect the current token: {e}\n"));
            return Ok(Done::new(out, EXIT_TEMPFAIL));
        }
    };
    match &facts {
        Some(f) => {
            let due = super::due_at(t, f);
            out.push_str(&format!(
                "  Current: version {cur_v}, fingerprint {}, {}; rotation due {}\n",
                f.fingerprint,
                match crate::policy::effective_expiry(f, t.policy.max_age) {
                    Some(e) => format!("acceptable until {}", timefmt::utc(e.at)),
                    None => "no known end".into(),
                },
                match due {
                    Some(d) if d <= now => "now".to_string(),
                    Some(d) => format!("at {}", timefmt::utc(d)),
                    None => "never".into(),
                }
            ));
        }
        None => out.push_str(&format!(
            "  Current: version {cur_v}, fingerprint {}: Meta calls it invalid, so any valid successor will do\n",
            current.fingerprint()
        )),
    }
    let pending = store.pending().await?;
    let mut code = dry_obtain(&mut out, t, pending.as_ref(), facts.as_ref());
    out.push_str(&match t.kind {
        crate::config::Kind::Whatsapp => format!(
            "  2. validate: valid, app {}, a system-user token, both WhatsApp scopes{}{}, and living longer than the current token\n",
            cfg.meta.app_id,
            t.waba_id.as_deref().map(|w| format!(", WABA {w} among its targets")).unwrap_or_default(),
            t.phone_number_id.as_deref().map(|p| format!(", phone number {p} readable")).unwrap_or_default(),
        ),
        crate::config::Kind::Marketing => format!(
            "  2. validate: valid, app {}, a system-user token (or of the current token's type), ads_read or ads_management{}, every scope of the current token, and living longer than the current token\n",
            cfg.meta.app_id,
            if t.ad_accounts.is_empty() {
                String::new()
            } else {
                format!(", ad accounts {} running", t.ad_accounts.iter().map(|a| format!("act_{a}")).collect::<Vec<_>>().join(", "))
            },
        ),
        crate::config::Kind::WhatsappBusiness => format!(
            "  2. validate: valid, app {}, both WhatsApp scopes, and {}\n",
            cfg.meta.app_id,
            t.waba_id.as_deref().map_or_else(
                || format!("no WABA to read: tag the secret `{}`", crate::config::TAG_WABA),
                |w| format!("the customer's WABA {w} lists its phone numbers"),
            ),
        ),
        crate::config::Kind::Page => format!(
            "  2. validate: valid, app {}, a Page token of Page {}, the Page readable{}, and living longer than the current token\n",
            cfg.meta.app_id,
            t.page.as_ref().map_or("?", |p| p.id.as_str()),
            if t.page.as_ref().is_some_and(|p| p.messenger) { " and subscribed to the app" } else { "" },
        ),
        k => format!(
            "  2. validate: GET /me on {} answers, and (when its expiry is known) living longer than the current token\n",
            k.host()
        ),
    });
    if let Some((_, candidate)) = &pending {
        match run::inspect_candidate(&cfg.state_dir, graph, t, candidate).await {
            Ok(rep) => match super::judge(&rep, &run::expectations(cfg, t, facts.as_ref())) {
                Ok(()) => out.push_str("     the staged candidate passes every check now\n"),
                Err(check) => {
                    out.push_str(&format!(
                        "     the staged candidate would be rejected: {check}\n"
                    ));
                    code = 1;
                }
            },
            Err(e) => out.push_str(&format!("     cannot check the candidate now: {e}\n")),
        }
    }
    code = code.max(dry_deliver(&mut out, cfg, t, pending.as_ref(), &current).await);
    out.push_str(&format!(
        "  4. promote: move AWSCURRENT from version {cur_v} to the candidate in {} (the old version becomes AWSPREVIOUS)\n",
        store.describe()
    ));
    match t.rotation.revoke_after {
        Some(g) => out.push_str(&format!(
            "  5. revoke: {} after promotion, revoke the old token (fingerprint {}) through Meta and confirm it is invalid\n",
            timefmt::span(g.as_secs() as i64),
            current.fingerprint()
        )),
        None if !t.kind.revocable() => out.push_str(&format!(
            "  5. revoke: none: Meta offers no revoke for {} tokens; the old token stays valid until its own expiry\n",
            t.kind
        )),
        None => out.push_str("  5. revoke: never (revoke_after = \"never\"): the old token stays valid until its own expiry\n"),
    }
    Ok(Done::new(out, code))
}

/// Step 1 of a dry run: where the candidate would come from, and whether that can work.
/// Returns the exit code: 1 when the rotation would stop there.
fn dry_obtain(
    out: &mut String,
    t: &TokenConfig,
    pending: Option<&(crate::store::VersionId, Secret)>,
    facts: Option<&crate::policy::TokenFacts>,
) -> u8 {
    let name = &t.name;
    let mut code = 0;
    out.push_str("  1. obtain: ");
    match (pending, &t.rotation.source) {
        (Some((v, s)), _) => out.push_str(&format!(
            "use the staged candidate, version {v}, fingerprint {}\n",
            s.fingerprint()
        )),
        (None, Source::Staged) => {
            out.push_str(&format!(
                "nothing is staged: the rotation would stop here. Stage a token with `tokenwarden stage --token {name}`\n"
            ));
            code = 1;
        }
        (None, Source::Refresh) if t.kind == crate::config::Kind::WhatsappBusiness => {
            // Fetched again for the customer's business, dead or alive; never a refresh.
            let business = t.business.as_ref();
            let id = business.and_then(|b| b.client_business_id.as_deref());
            out.push_str(&format!(
                "fetch the customer's business token again for business {} with `business.partner_token` (POST /{{client-business-id}}/system_user_access_tokens, fetch_only), and stage it\n",
                id.unwrap_or("?")
            ));
            let refused = match business {
                None => Some("no `business` table".to_string()),
                Some(_) if id.is_none() => Some(format!(
                    "no client business id: tag the token's secret `{}` with the customer's business id",
                    crate::config::TAG_CLIENT_BUSINESS
                )),
                Some(b) => b
                    .partner_token
                    .resolve()
                    .err()
                    .map(|e| format!("`business.partner_token`: {e}")),
            };
            if let Some(why) = refused {
                out.push_str(&format!("     refused: {why}\n"));
                code = 1;
            }
        }
        (None, Source::Refresh) => {
            out.push_str(&match t.kind {
                crate::config::Kind::Whatsapp | crate::config::Kind::Marketing => "refresh the current token through Meta's API (`oauth/access_token`, fb_exchange_token), and stage the answer\n".to_string(),
                crate::config::Kind::Page => format!(
                    "take the Page token of Page {} again from `page.user_token` (GET /{{page-id}}?fields=access_token), and stage it\n",
                    t.page.as_ref().map_or("?", |p| p.id.as_str())
                ),
                k => format!(
                    "refresh the current token on {} (GET /refresh_access_token, {}), record the expiry Meta gives, and stage it\n",
                    k.host(),
                    k.refresh_grant().unwrap_or_default()
                ),
            });
            if let Some(why) = super::source_conflict(t, facts) {
                out.push_str(&format!("     refused: {why}\n"));
                code = 1;
            } else if facts.is_none() {
                out.push_str("     refused: an invalid token cannot be refreshed; stage a new one from Business Manager\n");
                code = 1;
            }
        }
        (None, Source::Mint(m)) => {
            out.push_str(&format!(
                "mint a {} system-user token for system user {} and stage it\n",
                if m.expiring { "60-day" } else { "non-expiring" },
                m.system_user_id
            ));
            if let Err(e) = m.admin_token.resolve() {
                out.push_str(&format!("     refused: `mint.admin_token`: {e}\n"));
                code = 1;
            }
        }
    }
    code
}

/// Step 3 of a dry run: each target in wave order, what it holds now, and its verify run
/// against the current token. Returns the exit code: 1 when a target cannot be set up or its
/// verify fails.
async fn dry_deliver(
    out: &mut String,
    cfg: &Config,
    t: &TokenConfig,
    pending: Option<&(crate::store::VersionId, Secret)>,
    current: &Secret,
) -> u8 {
    let mut code = 0;
    if t.targets.is_empty() {
        out.push_str("  3. deliver: no environments are configured for this token\n");
    } else {
        let new_word = match pending {
            Some((_, s)) => format!("{} (fingerprint {})", mask(s), s.fingerprint()),
            None => "the new token".into(),
        };
        out.push_str(&format!(
            "  3. deliver {new_word}, wave by wave (at most {} at once); each target's verify, run now against the current token:\n",
            cfg.delivery.parallelism
        ));
        let mut targets: Vec<_> = t.targets.iter().collect();
        targets.sort_by_key(|x| x.wave);
        let http = crate::target::http_client();
        for tc in targets {
            let line = match crate::target::Configured::open(tc).await {
                Err(e) => {
                    code = 1;
                    format!("cannot be set up: {e}")
                }
                Ok(c) => {
                    let holds = match c.read_back().await {
                        Ok(Some(f)) if f == current.fingerprint() => {
                            "holds the current token".to_string()
                        }
                        Ok(Some(f)) => format!("holds token {f}, not the current one"),
                        Ok(None) if c.readable() => "holds no token yet".into(),
                        Ok(None) => "cannot be read back".into(),
                        Err(e) => format!("cannot be read: {e}"),
                    };
                    let verify = if tc.verify.is_none() {
                        "no verify configured".to_string()
                    } else {
                        match c.verify_configured(&http, tc.timeout).await {
                            Ok(()) => "verify passes now".into(),
                            Err(e) => {
                                code = 1;
                                format!("verify FAILS now: {e}")
                            }
                        }
                    };
                    format!(
                        "{}; {holds} ({}); {verify}",
                        c.describe(),
                        c.read_back_note()
                    )
                }
            };
            out.push_str(&format!("     wave {}: {}: {line}\n", tc.wave, tc.name));
        }
    }
    code
}

/// A token shown without its value: its first four characters (Meta's fixed prefix) only.
fn mask(token: &Secret) -> String {
    let head: String = token.expose().chars().take(4).collect();
    format!("{head}…")
}

/// `tokenwarden rollback --token NAME`: makes the previous version current again, if Meta still
/// calls it valid. A rotation waiting to revoke that version is stopped first.
///
/// # Errors
/// [`CommandError`] when the store or state directory is unusable.
pub async fn rollback(
    cfg: &Config,
    graph: &GraphClient,
    t: &TokenConfig,
    now: Timestamp,
) -> Result<Done, CommandError> {
    let s = setup(cfg, t).await?;
    let name = &t.name;
    let Some(_lock) = s.log.try_lock(name).map_err(run::RotateError::from)? else {
        return Ok(Done::new(
            format!("{name}: a rotation is running right now; try again in a minute\n"),
            EXIT_TEMPFAIL,
        ));
    };
    let Some((prev_v, prev)) = s.store.previous().await? else {
        return Ok(Done::new(
            format!(
                "{name}: {} has no previous version to go back to\n",
                s.store.describe()
            ),
            1,
        ));
    };
    match graph.debug_token(&prev).await {
        Ok(info) if info.invalid_reason().is_none() => {}
        Ok(info) => {
            let why = info
                .invalid_reason()
                .map(|a| crate::graph::dead_reason(&a))
                .unwrap_or_default();
            return Ok(Done::new(
                format!(
                    "{name}: refusing to roll back: the previous token (version {prev_v}, fingerprint {}) is no longer valid ({why}); going back would stop messaging\n",
                    prev.fingerprint()
                ),
                1,
            ));
        }
        Err(e @ GraphError::Transient(_)) => {
            return Ok(Done::new(
                format!("{name}: cannot check the previous token with Meta now ({e}); try again\n"),
                EXIT_TEMPFAIL,
            ));
        }
        Err(e) => return Err(CommandError::Config(e.to_string())),
    }
    let (cur_v, current) = s.store.current_version().await?;
    let back = s.store.rollback().await?;
    if let Some(mut r) = s.log.load(name).map_err(run::RotateError::from)?
        && r.is_active()
    {
        super::apply(
            &mut r,
            super::Event::Superseded(format!("rolled back by hand to version {back}")),
            None,
            now,
        );
        s.log.save(&r).map_err(run::RotateError::from)?;
    }
    s.audit.record(
        now,
        AuditEvent::Rollback,
        serde_json::json!({"token": name, "from": current.fingerprint().to_string(), "to": prev.fingerprint().to_string(), "from_version": cur_v.0, "to_version": back.0}),
    );
    Ok(Done::new(
        format!(
            "{name}: rolled back: version {back} (fingerprint {}) is current again; version {cur_v} (fingerprint {}) is now the previous one\n",
            prev.fingerprint(),
            current.fingerprint()
        ),
        0,
    ))
}

/// Exchanges `value` for a long-lived token with the product app's secret when Meta takes it
/// as short-lived: `Some((token, line))` with the new token (its expiry recorded) and a line
/// for the output, `None` when Meta refuses the exchange (the value is not short-lived: it is
/// staged as it is), or the command's answer when nothing can be staged.
async fn exchange_short_lived(
    cfg: &Config,
    graph: &GraphClient,
    t: &TokenConfig,
    app: &crate::config::KindApp,
    value: &Secret,
    now: Timestamp,
) -> Result<Option<(Secret, String)>, Done> {
    let name = &t.name;
    let secret = app.app_secret.resolve().map_err(|e| {
        Done::new(
            format!("{name}: `app.app_secret`: {e}; nothing was staged\n"),
            1,
        )
    })?;
    match graph.exchange_kind(t.kind, &secret, value).await {
        Ok(long) => {
            let expires_at = long
                .expires_in
                .and_then(|d| Timestamp::from_second(now.as_second() + d.as_secs() as i64).ok());
            let entry = crate::observe::RecordedExpiry {
                fingerprint: long.token.fingerprint(),
                issued_at: now,
                expires_at,
            };
            if let Err(e) = crate::observe::ExpiryLog::new(&cfg.state_dir).record(name, entry) {
                tracing::error!(token = %name, error = %e, "cannot record the exchanged token's expiry");
            }
            let until = expires_at.map_or_else(|| "an unknown time".into(), timefmt::utc);
            Ok(Some((
                long.token.clone(),
                format!(
                    "{name}: exchanged the short-lived token for a long-lived one (fingerprint {}, valid until {until}) with app {}\n",
                    long.token.fingerprint(),
                    app.app_id
                ),
            )))
        }
        // Meta refuses to exchange what is not short-lived: the value is already long-lived.
        Err(GraphError::Misconfigured(_)) => Ok(None),
        Err(e @ GraphError::OwnCredentials(_)) => Err(Done::new(
            format!(
                "{name}: {} refused app {}'s secret ({e}): `app` must name the {} app's own id and secret from the App Dashboard, not the Meta app's; nothing was staged\n",
                t.kind.host(),
                app.app_id,
                t.kind
            ),
            1,
        )),
        Err(e @ GraphError::Transient(_)) => Err(Done::new(
            format!(
                "{name}: cannot reach {} now ({e}); nothing was staged, try again\n",
                t.kind.host()
            ),
            EXIT_TEMPFAIL,
        )),
        Err(e) => Err(Done::new(
            format!(
                "{name}: {} refused the token ({e}); {}; nothing was staged\n",
                t.kind.host(),
                t.kind.advice().relogin
            ),
            1,
        )),
    }
}

/// `tokenwarden stage --token NAME`: checks a pasted value, validates it with Meta like a
/// rotation would, and stages it as the next token (`AWSPENDING`). Nothing is promoted here.
///
/// # Errors
/// [`CommandError`] when the store is unusable.
pub async fn stage(
    cfg: &Config,
    graph: &GraphClient,
    t: &TokenConfig,
    value: &Secret,
    now: Timestamp,
) -> Result<Done, CommandError> {
    let name = &t.name;
    let findings = crate::lint::check_value(value.expose());
    if !findings.is_empty() {
        let mut out = String::new();
        for f in findings {
            out.push_str(&format!("error: {}\n", f.explain()));
        }
        out.push_str(&format!("{name}: nothing was staged\n"));
        return Ok(Done::new(out, EXIT_DATAERR));
    }
    // An Instagram or Threads token with its product's app configured: a short-lived token
    // (what a new login gives) is exchanged for a long-lived one first, and Meta's expiry kept.
    let exchanged;
    let mut note = String::new();
    let value = match &t.app {
        Some(app) if t.kind.exchange_grant().is_some() => {
            match exchange_short_lived(cfg, graph, t, app, value, now).await {
                Ok(Some((long, line))) => {
                    exchanged = long;
                    note = line;
                    &exchanged
                }
                Ok(None) => value,
                Err(done) => return Ok(done),
            }
        }
        _ => value,
    };
    let store = Store::open(&t.store, &t.name, &cfg.state_dir).await?;
    let current = match store.current_version().await {
        Ok((_, c)) => Some(c),
        Err(StoreError::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let facts = match &current {
        Some(c) => match run::current_facts(&cfg.state_dir, t, graph, c).await {
            Ok(f) => f,
            Err(e) => {
                return Ok(Done::new(
                    format!(
                        "{name}: cannot check the current token with Meta now ({e}); nothing was staged, try again\n"
                    ),
                    EXIT_TEMPFAIL,
                ));
            }
        },
        None => None,
    };
    let report = match run::inspect_candidate(&cfg.state_dir, graph, t, value).await {
        Ok(r) => r,
        Err(e) => {
            let code = if matches!(e, GraphError::Transient(_)) {
                EXIT_TEMPFAIL
            } else {
                1
            };
            return Ok(Done::new(
                format!("{name}: cannot check the token with Meta ({e}); nothing was staged\n"),
                code,
            ));
        }
    };
    if let Err(check) = super::judge(&report, &run::expectations(cfg, t, facts.as_ref())) {
        return Ok(Done::new(format!("{name}: not staged: {check}\n"), 1));
    }
    let request = uuid::Uuid::new_v4().to_string();
    let v = store.put_pending(value, &request).await?;
    Audit::new(&cfg.state_dir).with_limits(cfg.audit).record(
        now,
        AuditEvent::Staged,
        serde_json::json!({"token": name, "version": v.0, "fingerprint": value.fingerprint().to_string()}),
    );
    let side = Side {
        version: v.0.clone(),
        fingerprint: value.fingerprint(),
    };
    let when = match facts.as_ref().and_then(|f| super::due_at(t, f)) {
        Some(d) if d > now => format!("when the rotation is due at {}", timefmt::utc(d)),
        _ => "on the daemon's next check (the rotation is due now)".into(),
    };
    Ok(Done::new(
        format!(
            "{note}{name}: staged version {} (fingerprint {}) in {}; it passed every check.\nIt will be promoted {when}, or now with `tokenwarden rotate --token {name}`.\n",
            side.version,
            side.fingerprint,
            store.describe()
        ),
        0,
    ))
}
