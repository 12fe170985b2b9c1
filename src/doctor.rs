//! `tokenwarden doctor`: the runbook's manual checks as one readable checklist.
//!
//! Two halves. [`observe`] does the IO for one token: reads the store, asks `debug_token`,
//! reads the phone number, and on trouble gathers what is needed to explain it (the WABA's
//! phone numbers). [`evaluate`] is pure: it turns an [`Observation`] and `now` into
//! [`Check`]s with a mark, the facts, and on failure the cause and the fix in plain words,
//! naming the field mistakes of reference section 9 when it sees them. Instagram and Threads
//! tokens are checked with their own host's `GET /me`, their recorded expiry and their renewal.
//!
//! The product apps those tokens name (`app = { app_id, app_secret }`) are checked once per
//! app and secret reference, whichever tokens share it: [`observe_apps`] reads the secret and
//! asks Meta (Threads' app access token; Instagram offers no such call), [`evaluate_app`]
//! words the outcome.

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{Config, Kind, SecretRef, SecretRefError, TokenConfig};
use crate::graph::version::{ApiVersion, VersionStatus};
use crate::graph::{
    self, AppCheck, Expiry, GraphClient, GraphError, PhoneNumber, TokenInfo, Transient,
};
use crate::lint;
use crate::secret::{Fingerprint, Secret};
use crate::store::{SecretStore, Store, StoreError};
use crate::timefmt;
use crate::usable::{self, WabaFinding};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// Fine.
    Pass,
    /// Works, but needs attention soon.
    Warn,
    /// Broken: the integration fails or will fail.
    Fail,
    /// Not checked (not configured, or an earlier check failed).
    Skip,
}

impl Mark {
    fn symbol(self) -> &'static str {
        match self {
            Mark::Pass => "✓",
            Mark::Warn => "!",
            Mark::Fail => "✗",
            Mark::Skip => "-",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier: `store`, `value`, `valid`, `app`, `type`, `expiry`, `scopes`, `waba`,
    /// `phone`, `send_text`, `send_template`; for Instagram and Threads tokens `renewal`; for
    /// their product apps ([`AppReport`]) `app_secret`.
    pub id: &'static str,
    /// The outcome.
    pub mark: Mark,
    /// The facts, or what went wrong.
    pub detail: String,
    /// What a person should do, when anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(id: &'static str, mark: Mark, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check {
        id,
        mark,
        detail: detail.into(),
        fix,
    }
}

/// The checklist of one token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    /// The token's configured name.
    pub token: String,
    /// Fingerprint of the value read from the store.
    pub fingerprint: Option<Fingerprint>,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl TokenReport {
    /// Whether nothing failed.
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.mark != Mark::Fail)
    }
}

/// The check of one product app: the `app` (id and secret reference) of Instagram or Threads
/// tokens, reported once for all the tokens that name it.
#[derive(Debug, Clone, Serialize)]
pub struct AppReport {
    /// The tokens' kind (`instagram`, `threads`).
    pub kind: Kind,
    /// The product app's id.
    pub app_id: String,
    /// The tokens whose `app` this is, in config order.
    pub tokens: Vec<String>,
    /// `app_secret`: whether Meta accepts the app's secret, or why it cannot say.
    pub check: Check,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The pinned Graph version and whether it is still supported.
    pub graph_version: Check,
    /// One checklist per token.
    pub tokens: Vec<TokenReport>,
    /// One check per product app of the checked Instagram and Threads tokens.
    pub apps: Vec<AppReport>,
}

impl Report {
    /// Whether every check passed or only warned.
    pub fn healthy(&self) -> bool {
        self.graph_version.mark != Mark::Fail
            && self.tokens.iter().all(TokenReport::healthy)
            && self.apps.iter().all(|a| a.check.mark != Mark::Fail)
    }
}

/// Options of `doctor`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this token.
    pub token: Option<String>,
    /// Send the runbook's test messages to this number (nothing is sent without it).
    pub send_test: Option<String>,
    /// The template for the test send.
    pub template: String,
    /// The template's language.
    pub language: String,
}

/// Everything [`observe`] learned about one token.
#[derive(Debug)]
pub struct Observation {
    /// Store description.
    pub store: String,
    /// The value read from the store, or why not.
    pub value: Result<Secret, StoreError>,
    /// `debug_token`'s answer (absent when no value).
    pub info: Option<Result<TokenInfo, GraphError>>,
    /// The configured phone number read with the token.
    pub phone: Option<Result<PhoneNumber, GraphError>>,
    /// The configured WABA read with the token, made when `debug_token` lists no targets.
    pub waba: Option<Result<(), GraphError>>,
    /// The WABA's phone numbers, read to explain a phone failure or a missing id.
    pub waba_numbers: Option<Result<Vec<PhoneNumber>, GraphError>>,
    /// Results of `--send-test`: (text, template).
    pub sends: Option<(Result<String, GraphError>, Result<String, GraphError>)>,
    /// The reads of a Page token (its Page, its Messenger subscription) or of a Marketing
    /// token (its ad accounts), when made.
    pub kind_proof: graph::Proof,
    /// When Meta refused to inspect the token: whether it accepts tokenwarden's app token
    /// itself ([`GraphClient::app_credentials`]), which tells a reset app secret (the app's
    /// trouble) from a token of another app (the token's).
    pub meta_app: Option<Result<(), GraphError>>,
}

/// Runs the checks for every configured token (or the one in `opts.token`).
pub async fn run(cfg: &Config, graph: &GraphClient, opts: &Options, now: Timestamp) -> Report {
    let mut tokens = Vec::new();
    let chosen: Vec<&TokenConfig> = cfg
        .tokens
        .iter()
        .filter(|t| opts.token.as_ref().is_none_or(|n| *n == t.name))
        .collect();
    for t in &chosen {
        let obs = observe(cfg, t, graph, opts).await;
        tokens.push(evaluate(t, &cfg.meta.app_id, &obs, now));
    }
    let apps = observe_apps(&chosen, graph)
        .await
        .iter()
        .map(evaluate_app)
        .collect();
    Report {
        graph_version: version_check(graph.version(), now),
        tokens,
        apps,
    }
}

/// What [`observe_apps`] learned of one product app.
#[derive(Debug)]
pub struct AppObservation {
    /// The tokens' kind.
    pub kind: Kind,
    /// The app's id.
    pub app_id: String,
    /// Where its secret lives.
    pub secret_ref: SecretRef,
    /// The tokens that name it, in config order.
    pub tokens: Vec<String>,
    /// Meta's verdict on the secret, or why it was not asked.
    pub outcome: Result<Result<AppCheck, GraphError>, SecretRefError>,
}

/// Reads the secret of every distinct product app of `tokens` (kind, id and secret
/// reference: two references to one app are two secrets that may differ) and asks Meta
/// whether it is accepted ([`GraphClient::check_kind_app`]); the secret is dropped after.
pub async fn observe_apps(tokens: &[&TokenConfig], graph: &GraphClient) -> Vec<AppObservation> {
    let mut apps: Vec<AppObservation> = Vec::new();
    for t in tokens {
        let Some(app) = &t.app else { continue };
        if let Some(seen) = apps
            .iter_mut()
            .find(|a| a.kind == t.kind && a.app_id == app.app_id && a.secret_ref == app.app_secret)
        {
            seen.tokens.push(t.name.clone());
            continue;
        }
        let outcome = match app.app_secret.resolve() {
            Ok(secret) => Ok(graph.check_kind_app(t.kind, &app.app_id, &secret).await),
            Err(e) => Err(e),
        };
        apps.push(AppObservation {
            kind: t.kind,
            app_id: app.app_id.clone(),
            secret_ref: app.app_secret.clone(),
            tokens: vec![t.name.clone()],
            outcome,
        });
    }
    apps
}

/// The `app_secret` check of one product app, in words. Pure.
pub fn evaluate_app(obs: &AppObservation) -> AppReport {
    let kind = obs.kind;
    let product = kind.product();
    let id = &obs.app_id;
    let whose = format!("the {product} app {id}'s secret");
    let put_it = format!(
        "put the {product} app's current secret where `app.app_secret` points ({}): {}",
        obs.secret_ref,
        kind.advice().dashboard
    );
    let check = match &obs.outcome {
        Err(e) => check(
            "app_secret",
            Mark::Fail,
            format!("cannot read {whose}: {e}"),
            Some(format!(
                "make {} hold the {product} app's secret, then run `tokenwarden doctor` again",
                obs.secret_ref
            )),
        ),
        Ok(Ok(AppCheck::Accepted)) => check(
            "app_secret",
            Mark::Pass,
            format!(
                "{whose} is accepted ({} gave the app its app access token)",
                kind.host()
            ),
            None,
        ),
        Ok(Ok(AppCheck::NotCheckable)) => check(
            "app_secret",
            Mark::Skip,
            format!(
                "not checked: Meta offers no call that checks {} {product} app's secret alone (the {} has no app access token); tokenwarden checks it at the next exchange of a short-lived token",
                if product.starts_with(['A', 'E', 'I', 'O', 'U']) { "an" } else { "a" },
                kind.advice().product
            ),
            None,
        ),
        Ok(Err(GraphError::OwnCredentials(api))) => check(
            "app_secret",
            Mark::Fail,
            format!(
                "{} refused {whose} ({api}): renewing a token of this app by exchange fails until it is fixed; this says nothing about the tokens themselves",
                kind.host()
            ),
            Some(match kind {
                Kind::Threads => format!(
                    "put the Threads app's current secret (App Dashboard, https://developers.facebook.com/apps/: your app > App settings > Basic > Threads app secret) where `app.app_secret` points ({}), and the Threads app id in `app.app_id`: an app with the Threads use case has two ids and secrets, the Meta app's and the Threads app's, and only the Threads ones work here; if the secret was reset, the old one no longer works",
                    obs.secret_ref
                ),
                _ => format!("{put_it}; if it was reset, the old one no longer works"),
            }),
        ),
        Ok(Err(GraphError::Transient(t))) => check(
            "app_secret",
            Mark::Warn,
            format!("cannot check {whose} now: {t}; this says nothing about the secret"),
            Some("run `tokenwarden doctor` again later; if it persists, check this host's route to Meta".into()),
        ),
        Ok(Err(e)) => check(
            "app_secret",
            Mark::Fail,
            format!("{} refused the check of {whose}: {e}", kind.host()),
            Some(put_it),
        ),
    };
    AppReport {
        kind,
        app_id: id.clone(),
        tokens: obs.tokens.clone(),
        check,
    }
}

/// Does the IO for one token.
pub async fn observe(
    cfg: &Config,
    t: &TokenConfig,
    graph: &GraphClient,
    opts: &Options,
) -> Observation {
    let (store, value) = match Store::open(&t.store, &t.name, &cfg.state_dir).await {
        Ok(s) => (s.describe(), s.current().await),
        Err(e) => (String::from("store"), Err(e)),
    };
    let mut obs = Observation {
        store,
        value,
        info: None,
        phone: None,
        waba: None,
        waba_numbers: None,
        sends: None,
        kind_proof: graph::Proof::default(),
        meta_app: None,
    };
    let Ok(token) = &obs.value else { return obs };
    if !t.kind.debug_token() {
        // Instagram and Threads: the kind's `GET /me` and the recorded expiry are all there is.
        obs.info = Some(crate::observe::inspect(&cfg.state_dir, t, graph, token).await);
        return obs;
    }
    let info = match graph.debug_token(token).await {
        Ok(i) if i.invalid_reason().is_none() => i,
        other => {
            if matches!(other, Err(GraphError::OwnCredentials(_))) {
                obs.meta_app = Some(graph.app_credentials().await);
            }
            obs.info = Some(other);
            return obs;
        }
    };
    // The same reads as the daemon's check (`usable`): the WABA when debug_token lists no
    // targets, and the phone number; for a Page token its Page and subscription.
    let (proof, _) = crate::observe::prove(graph, t, token, &info).await;
    if matches!(
        t.kind,
        crate::config::Kind::Page
            | crate::config::Kind::Marketing
            | crate::config::Kind::WhatsappBusiness
    ) {
        obs.info = Some(Ok(info));
        obs.kind_proof = proof;
        return obs;
    }
    obs.info = Some(Ok(info));
    obs.waba = proof.waba;
    obs.phone = proof.phone;
    let phone_failed = matches!(&obs.phone, Some(Err(GraphError::Misconfigured(_))));
    if phone_failed || t.phone_number_id.is_none() {
        // To explain a wrong id (or suggest one), list the numbers of the configured WABA,
        // or of the only WABA the token reaches.
        let wabas = match (&t.waba_id, &obs.info) {
            (Some(w), _) => vec![w.clone()],
            (None, Some(Ok(i))) => i.waba_ids(),
            _ => vec![],
        };
        if let [waba] = wabas.as_slice() {
            obs.waba_numbers = Some(graph.waba_phone_numbers(token, waba).await);
        }
    }
    if let (Some(to), Some(Ok(_)), Some(phone_id)) =
        (&opts.send_test, &obs.phone, &t.phone_number_id)
    {
        let text = graph
            .send_text(token, phone_id, to, "tokenwarden test: this WhatsApp number can send messages with the configured token.")
            .await;
        let template = graph
            .send_template(token, phone_id, to, &opts.template, &opts.language)
            .await;
        obs.sends = Some((text, template));
    }
    obs
}

fn version_check(v: ApiVersion, now: Timestamp) -> Check {
    let today = now.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let status = v.status(today);
    let mark = match status {
        VersionStatus::Supported(_) => Mark::Pass,
        VersionStatus::EndingSoon { .. } | VersionStatus::Unknown => Mark::Warn,
        VersionStatus::Ended(_) => Mark::Fail,
    };
    let fix = (mark != Mark::Pass).then(|| "set `api_version` in [meta] to a supported version such as \"v25.0\", then run `tokenwarden doctor` again".to_string());
    check(
        "graph_version",
        mark,
        format!("Graph API {v}: {status}"),
        fix,
    )
}

/// Turns an observation into checks. Pure.
pub fn evaluate(t: &TokenConfig, app_id: &str, obs: &Observation, now: Timestamp) -> TokenReport {
    let mut checks = Vec::new();
    let fingerprint = obs.value.as_ref().ok().map(Secret::fingerprint);
    let token = match &obs.value {
        Ok(v) => {
            checks.push(check(
                "store",
                Mark::Pass,
                format!("read from {} (fingerprint {})", obs.store, v.fingerprint()),
                None,
            ));
            v
        }
        Err(e) => {
            let fix = match e {
                StoreError::Missing { hint, .. } => hint.clone(),
                StoreError::Broken { .. } => "fix the store as the message says, then run `tokenwarden doctor` again".into(),
                StoreError::Unavailable { .. } => "check the network path and credentials to the store; tokenwarden retries on its next run".into(),
                StoreError::Conflict { .. } => "another process changed the store while it was read; run `tokenwarden doctor` again".into(),
            };
            checks.push(check("store", Mark::Fail, e.to_string(), Some(fix)));
            return TokenReport {
                token: t.name.clone(),
                fingerprint,
                checks,
            };
        }
    };

    let findings = lint::check_value(token.expose());
    if findings.is_empty() {
        checks.push(check(
            "value",
            Mark::Pass,
            "looks like a Graph access token",
            None,
        ));
    } else {
        let words: Vec<&str> = findings.iter().map(|f| f.explain()).collect();
        checks.push(check(
            "value",
            Mark::Fail,
            words.join("; "),
            Some(format!("put the right value in {}", obs.store)),
        ));
    }

    if !t.kind.debug_token() {
        evaluate_kind(t, token, obs, now, &mut checks);
        return TokenReport {
            token: t.name.clone(),
            fingerprint,
            checks,
        };
    }
    let info = match &obs.info {
        Some(Ok(info)) => info,
        Some(Err(e)) => {
            checks.push(inspection_refused(e, obs.meta_app.as_ref()));
            return TokenReport {
                token: t.name.clone(),
                fingerprint,
                checks,
            };
        }
        None => {
            return TokenReport {
                token: t.name.clone(),
                fingerprint,
                checks,
            };
        }
    };
    evaluate_info(t, app_id, info, obs, now, &mut checks);
    checks.extend(business_renewal_check(t));
    if info.invalid_reason().is_none() && t.kind == crate::config::Kind::Whatsapp {
        evaluate_phone(t, info, obs, &mut checks);
        if let Some((text, template)) = &obs.sends {
            checks.push(send_check("send_text", text, "text message"));
            checks.push(send_check("send_template", template, "template message"));
        }
    }
    TokenReport {
        token: t.name.clone(),
        fingerprint,
        checks,
    }
}

const NEW_TOKEN_STEPS: &str = "in Business Manager > Users > System users, pick an Admin system user, make sure the app \
and the WhatsApp Business Account are assigned to it, click Generate new token, tick whatsapp_business_management and \
whatsapp_business_messaging, then store the new token where tokenwarden reads it";

/// The checks of a kind `debug_token` does not inspect (Instagram, Threads): `valid` (the
/// kind's `GET /me`, naming a token given to the wrong host), `expiry` (what Meta said when
/// tokenwarden last renewed it, or unknown until then) and `renewal` (the source).
fn evaluate_kind(
    t: &TokenConfig,
    token: &Secret,
    obs: &Observation,
    now: Timestamp,
    checks: &mut Vec<Check>,
) {
    let kind = t.kind;
    let relogin = kind.advice().relogin.to_string();
    let info = match &obs.info {
        Some(Ok(info)) => info,
        Some(Err(e)) => {
            checks.push(graph_failure("valid", e));
            return;
        }
        None => return,
    };
    if let Some(api) = info.invalid_reason() {
        let (detail, fix) = match crate::observe::wrong_host(kind, token, &api) {
            Some(other) => (
                kind.wrong_host(other),
                format!(
                    "set kind = \"{other}\" on token `{}`, then run `tokenwarden doctor` again",
                    t.name
                ),
            ),
            None => (graph::dead_reason(&api), relogin),
        };
        checks.push(check("valid", Mark::Fail, detail, Some(fix)));
        return;
    }
    checks.push(check(
        "valid",
        Mark::Pass,
        format!(
            "GET /me on {} answered for account {}",
            kind.host(),
            info.user_id.as_deref().unwrap_or("(no id)")
        ),
        None,
    ));
    let expiry = match info.expires_at {
        Expiry::Unknown => check(
            "expiry",
            Mark::Warn,
            format!(
                "unknown: {} does not say a token's expiry; tokenwarden records the one Meta gives when it refreshes the token",
                kind.host()
            ),
            Some(format!(
                "with source = \"refresh\", tokenwarden refreshes it at its next run (Meta refreshes tokens at least 24 hours old), or run `tokenwarden rotate --token {}`; an expired token cannot be refreshed",
                t.name
            )),
        ),
        _ => {
            let mut c = expiry_check(info, now);
            if c.mark == Mark::Fail {
                c.fix = Some(relogin.clone());
            }
            c
        }
    };
    checks.push(expiry);
    checks.push(match t.rotation.source {
        crate::config::Source::Refresh => check(
            "renewal",
            Mark::Pass,
            format!("refreshed on {} ({}) long before it expires; Meta offers no revoke, so the old token lives until its own expiry", kind.host(), kind.refresh_grant().unwrap_or_default()),
            None,
        ),
        _ => check(
            "renewal",
            Mark::Warn,
            "source = \"staged\": nobody renews this token unless a person stages a new one, and once it expires only a new login helps",
            Some(format!("set source = \"refresh\" on token `{}`", t.name)),
        ),
    });
}

/// `page`: the Page token's type and Page, its read of the Page and (for Messenger) the Page's
/// subscription to the app: the same rule as the daemon's check (`usable::decide_page`).
fn page_check(
    t: &TokenConfig,
    page: &crate::config::PageConfig,
    info: &TokenInfo,
    obs: &Observation,
) -> Check {
    let messenger = if page.messenger {
        " and is subscribed to the app (Messenger)"
    } else {
        ""
    };
    match usable::decide_page(info, &page.id, page.messenger, &obs.kind_proof) {
        usable::Usability::Usable => check(
            "page",
            Mark::Pass,
            format!("the token reads Page {}{messenger}", page.id),
            None,
        ),
        usable::Usability::Unknown(why) | usable::Usability::Throttled { detail: why, .. } => {
            check("page", Mark::Warn, why, None)
        }
        usable::Usability::Dead(api) => check(
            "page",
            Mark::Fail,
            graph::dead_reason(&api),
            Some(crate::config::Kind::Page.advice().relogin.to_string()),
        ),
        usable::Usability::Unusable(why) | usable::Usability::OwnCredentials(why) => check(
            "page",
            Mark::Fail,
            why,
            Some(format!(
                "check that `page.id` of token `{}` is the Page's id, that the token is that Page's token, and (for Messenger) that the app is subscribed to the Page",
                t.name
            )),
        ),
    }
}

/// `business`: a business token's read of its customer's WABA's phone numbers, by the same
/// rule as the daemon's check (`usable::decide_business`).
fn business_check(t: &TokenConfig, info: &TokenInfo, obs: &Observation) -> Check {
    let waba = t.waba_id.as_deref().unwrap_or_default();
    match usable::decide_business(info, t.waba_id.as_deref(), &obs.kind_proof) {
        usable::Usability::Usable => check(
            "business",
            Mark::Pass,
            format!(
                "the customer's WhatsApp Business Account {waba} lists its phone numbers to the token"
            ),
            None,
        ),
        usable::Usability::Unknown(why) | usable::Usability::Throttled { detail: why, .. } => {
            check("business", Mark::Warn, why, None)
        }
        usable::Usability::Dead(api) => check(
            "business",
            Mark::Fail,
            graph::dead_reason(&api),
            Some(
                crate::config::Kind::WhatsappBusiness
                    .advice()
                    .relogin
                    .to_string(),
            ),
        ),
        // Without a WABA id the reason already says which tag to set; a new token is no fix.
        usable::Usability::Unusable(why) | usable::Usability::OwnCredentials(why) => check(
            "business",
            Mark::Fail,
            why,
            t.waba_id.as_ref().map(|_| {
                crate::config::Kind::WhatsappBusiness
                    .advice()
                    .relogin
                    .to_string()
            }),
        ),
    }
}

/// `renewal` of a business token that cannot be fetched again: a group's member whose secret
/// has no client business id tag (its rotation would fail naming it). Valid or dead, the
/// token says so now rather than when it needs renewing.
fn business_renewal_check(t: &TokenConfig) -> Option<Check> {
    let missing = t.kind == crate::config::Kind::WhatsappBusiness
        && t.rotation.source == crate::config::Source::Refresh
        && t.business
            .as_ref()
            .is_some_and(|b| b.client_business_id.is_none());
    missing.then(|| check(
        "renewal",
        Mark::Warn,
        "cannot be fetched again: no client business id for this customer",
        Some(format!(
            "tag the token's secret `{}` with the customer's business id (from Embedded Signup)",
            crate::config::TAG_CLIENT_BUSINESS
        )),
    ))
}

/// `ads`: a Marketing token's ads scope and each configured ad account's status, by the same
/// rule as the daemon's check (`usable::decide_marketing`).
fn ads_check(t: &TokenConfig, info: &TokenInfo, obs: &Observation) -> Check {
    let accounts = if t.ad_accounts.is_empty() {
        "no ad account configured".to_string()
    } else {
        let list: Vec<String> = t.ad_accounts.iter().map(|a| format!("act_{a}")).collect();
        format!("ad accounts {} running", list.join(", "))
    };
    match usable::decide_marketing(info, &obs.kind_proof) {
        usable::Usability::Usable => check(
            "ads",
            Mark::Pass,
            format!("ads_read or ads_management granted; {accounts}"),
            None,
        ),
        usable::Usability::Unknown(why) | usable::Usability::Throttled { detail: why, .. } => {
            check("ads", Mark::Warn, why, None)
        }
        usable::Usability::Dead(api) => check(
            "ads",
            Mark::Fail,
            graph::dead_reason(&api),
            Some(crate::config::Kind::Marketing.advice().relogin.to_string()),
        ),
        usable::Usability::Unusable(why) | usable::Usability::OwnCredentials(why) => check(
            "ads",
            Mark::Fail,
            why,
            Some(crate::config::Kind::Marketing.advice().relogin.to_string()),
        ),
    }
}

/// A failed inspection, in words: when Meta refused it, whose trouble it is, as the app
/// token's own inspection (`meta_app`) showed.
fn inspection_refused(e: &GraphError, meta_app: Option<&Result<(), GraphError>>) -> Check {
    match (e, meta_app) {
        (GraphError::OwnCredentials(api), Some(Ok(()))) => check(
            "valid",
            Mark::Fail,
            format!("Meta will not inspect the token with tokenwarden's app ({api}), although the app's own credentials work: the token belongs to another app"),
            Some("compare the token's App ID in Meta's Access Token Debugger (developers.facebook.com/tools/debug/accesstoken) with `app_id` in [meta]; put a token of that app in the store, or point [meta] at the token's app".into()),
        ),
        (GraphError::OwnCredentials(api), Some(Err(GraphError::OwnCredentials(_) | GraphError::Misconfigured(_)))) => check(
            "valid",
            Mark::Fail,
            format!("cannot inspect the token: Meta refused tokenwarden's own app secret ({api}), for every token of the app; this says nothing about the token itself"),
            Some("copy the app's current secret from the Meta app dashboard (App settings > Basic; if it was reset, the old one no longer works) to where `app_secret` in [meta] points, and check `app_id`".into()),
        ),
        _ => graph_failure("valid", e),
    }
}

fn graph_failure(id: &'static str, e: &GraphError) -> Check {
    match e {
        GraphError::OwnCredentials(api) => check(
            id,
            Mark::Fail,
            format!("cannot inspect the token: Meta refused tokenwarden's own app credentials ({api}); this says nothing about the token itself"),
            Some("check `app_id` and `app_secret` in [meta]: the secret may have been reset in the app dashboard (App settings > Basic), or the token belongs to another app".into()),
        ),
        GraphError::Transient(Transient::RateLimited { api, retry_after }) => check(
            id,
            Mark::Warn,
            format!(
                "throttled by Meta ({api}){}; this is not the token's fault",
                retry_after
                    .map(|w| format!(", access returns in about {}", timefmt::span(w.as_secs() as i64)))
                    .unwrap_or_default()
            ),
            Some("wait until access returns (the daemon defers its checks until then); if it happens often, spread the checks (`[schedule]`, a group's `spread`) or ask Meta for a higher limit".into()),
        ),
        GraphError::Transient(t) => check(
            id,
            Mark::Fail,
            format!("cannot check: {t}; this is not the token's fault"),
            Some("run `tokenwarden doctor` again later; if it persists, check this host's route to the Graph API".into()),
        ),
        GraphError::TokenDead(api) => check(id, Mark::Fail, graph::dead_reason(api), Some(NEW_TOKEN_STEPS.into())),
        GraphError::Misconfigured(api) => check(id, Mark::Fail, format!("{api}"), None),
    }
}

fn evaluate_info(
    t: &TokenConfig,
    app_id: &str,
    info: &TokenInfo,
    obs: &Observation,
    now: Timestamp,
    checks: &mut Vec<Check>,
) {
    validity_checks(app_id, info, checks);
    if info.invalid_reason().is_some() {
        return;
    }
    if let Some(page) = t
        .page
        .as_ref()
        .filter(|_| t.kind == crate::config::Kind::Page)
    {
        checks.push(expiry_check(info, now));
        checks.push(page_check(t, page, info, obs));
        return;
    }
    if t.kind == crate::config::Kind::Marketing {
        checks.push(type_check(info));
        checks.push(expiry_check(info, now));
        checks.push(ads_check(t, info, obs));
        return;
    }
    if t.kind == crate::config::Kind::WhatsappBusiness {
        checks.push(type_check(info));
        checks.push(expiry_check(info, now));
        checks.push(scopes_check(info));
        checks.push(business_check(t, info, obs));
        return;
    }
    checks.push(type_check(info));
    checks.push(expiry_check(info, now));
    checks.push(scopes_check(info));
    checks.push(waba_check(t, info, obs));
}

/// `valid` (what Meta says of the token) and, when the token names another app, `app`.
fn validity_checks(app_id: &str, info: &TokenInfo, checks: &mut Vec<Check>) {
    if info.validity_unknown() {
        checks.push(check(
            "valid",
            Mark::Warn,
            "Meta's answer did not say whether the token is valid (no `is_valid`); the reads below decide",
            None,
        ));
    } else if info.valid() {
        let app = info
            .application
            .as_deref()
            .map(|a| format!(" (app {a})"))
            .unwrap_or_default();
        checks.push(check(
            "valid",
            Mark::Pass,
            format!("Meta says the token is valid{app}"),
            None,
        ));
    } else {
        let api = info.invalid_reason().expect("the token is invalid here");
        // "could not be decrypted" / "cannot parse": no app, no type. That is the runbook's
        // "Access token could not be decrypted": not a token Meta issued as stored.
        let detail = if info.app_id.is_none() && info.token_type.is_none() {
            format!(
                "Meta cannot read this token at all ({}): it is not a token Meta issued, or it was truncated or pasted wrongly",
                api.message
            )
        } else {
            graph::dead_reason(&api)
        };
        checks.push(check(
            "valid",
            Mark::Fail,
            detail,
            Some(NEW_TOKEN_STEPS.into()),
        ));
    }
    if let Some(token_app) = &info.app_id
        && token_app != app_id
    {
        checks.push(check(
            "app",
            Mark::Fail,
            format!("the token belongs to app {token_app}, but tokenwarden is configured for app {app_id}"),
            Some("use a token of the configured app, or set `app_id` and `app_secret` in [meta] to the token's app".into()),
        ));
    }
}

/// `type`: a long-lived system-user token passes; a user, test or other token fails.
fn type_check(info: &TokenInfo) -> Check {
    let lifetime = match (info.issued_at, info.expires_at) {
        (Some(i), Expiry::At(e)) => Some(e.as_second() - i.as_second()),
        _ => None,
    };
    let temporary = lifetime.is_some_and(|l| l <= 2 * 86_400);
    let kind = info.token_type.as_deref().unwrap_or("unknown");
    let (mark, detail, fix) = match kind {
        "SYSTEM_USER" if temporary => (Mark::Fail, "a short-lived test token (about 24 hours), such as the one on WhatsApp > API Setup".to_string(), Some(NEW_TOKEN_STEPS.to_string())),
        "SYSTEM_USER" => (Mark::Pass, "system-user token".to_string(), None),
        "USER" if temporary => (Mark::Fail, "Meta's temporary token from WhatsApp > API Setup: it dies within a day".to_string(), Some(NEW_TOKEN_STEPS.to_string())),
        "USER" => (
            Mark::Fail,
            "a user token: it dies with its owner's session (password change, logout, leaving the company, 90 days without use)".to_string(),
            Some(NEW_TOKEN_STEPS.to_string()),
        ),
        other => (Mark::Fail, format!("a {other} token, not a system-user token; WhatsApp Cloud API integrations need a system-user token"), Some(NEW_TOKEN_STEPS.to_string())),
    };
    check("type", mark, detail, fix)
}

/// `scopes`: the WhatsApp permissions the token was granted, or the ones it lacks.
fn scopes_check(info: &TokenInfo) -> Check {
    let missing = usable::missing_scopes(&info.scopes);
    if missing.is_empty() {
        check(
            "scopes",
            Mark::Pass,
            graph::WHATSAPP_SCOPES.join(", "),
            None,
        )
    } else {
        let granted = if info.scopes.is_empty() {
            "none".to_string()
        } else {
            info.scopes.join(", ")
        };
        check(
            "scopes",
            Mark::Fail,
            format!("missing {} (granted: {granted})", missing.join(" and ")),
            Some(format!(
                "a token is a snapshot of its permissions: {NEW_TOKEN_STEPS}"
            )),
        )
    }
}

/// `waba`: whether the token reaches the configured WhatsApp Business Account, and how that
/// was decided.
fn waba_check(t: &TokenConfig, info: &TokenInfo, obs: &Observation) -> Check {
    let wabas = info.waba_ids();
    let reaches = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    };
    let assign = format!(
        "assign the WhatsApp Business Account to the system user with full control, then generate a new token (old tokens do not gain new assets): {NEW_TOKEN_STEPS}"
    );
    let proof = graph::Proof {
        waba: obs.waba.clone(),
        ..graph::Proof::default()
    };
    let w = t.waba_id.as_deref().unwrap_or_default();
    // The same finding the daemon's check and a candidate's validation use (`usable`), with
    // the way it was decided spelled out.
    match usable::waba_finding(info, t.waba_id.as_deref(), &proof) {
        WabaFinding::AmongTargets => check(
            "waba",
            Mark::Pass,
            format!(
                "WhatsApp Business Account {w} is among the token's targets (decided by debug_token's target_ids)"
            ),
            None,
        ),
        WabaFinding::ReadSucceeded => check(
            "waba",
            Mark::Pass,
            format!(
                "WhatsApp Business Account {w}: debug_token lists no target_ids (the permission was granted in general), and reading the account with the token succeeded (decided by the read)"
            ),
            None,
        ),
        WabaFinding::NotAmongTargets { reaches: ids } => check(
            "waba",
            Mark::Fail,
            format!(
                "WhatsApp Business Account {w} is not among the token's targets (it reaches: {}); this is the runbook's \"business account not found\"",
                reaches(&ids)
            ),
            Some(assign),
        ),
        WabaFinding::ReadFailed(GraphError::Misconfigured(api)) => check(
            "waba",
            Mark::Fail,
            format!(
                "WhatsApp Business Account {w}: debug_token lists no target_ids, and reading the account with the token was refused ({api})"
            ),
            Some(assign),
        ),
        WabaFinding::ReadFailed(e) => {
            let mut c = graph_failure("waba", &e);
            c.detail = format!(
                "WhatsApp Business Account {w}: debug_token lists no target_ids, and reading the account failed: {}",
                c.detail
            );
            c
        }
        WabaFinding::NotRead => check(
            "waba",
            Mark::Skip,
            format!(
                "WhatsApp Business Account {w}: debug_token lists no target_ids and the account was not read"
            ),
            None,
        ),
        WabaFinding::NotConfigured => check(
            "waba",
            Mark::Skip,
            format!(
                "`waba_id` not configured; the token reaches: {}",
                reaches(&wabas)
            ),
            None,
        ),
    }
}

fn expiry_check(info: &TokenInfo, now: Timestamp) -> Check {
    let issued = info
        .issued_at
        .map(|i| {
            format!(
                "; issued {} ({} ago)",
                timefmt::utc(i),
                timefmt::span(now.as_second() - i.as_second())
            )
        })
        .unwrap_or_default();
    match info.expires_at {
        Expiry::At(e) => {
            let left = e.as_second() - now.as_second();
            let when = format!("{} ({})", timefmt::utc(e), timefmt::pacific(e));
            if left <= 0 {
                check(
                    "expiry",
                    Mark::Fail,
                    format!("expired {when}{issued}"),
                    Some(NEW_TOKEN_STEPS.into()),
                )
            } else if left <= 7 * 86_400 {
                check("expiry", Mark::Warn, format!("expires {when}, in {}{issued}", timefmt::span(left)),
                    Some("rotate it now: refresh it if it is a 60-day system-user token, or generate a new one".into()))
            } else {
                check(
                    "expiry",
                    Mark::Pass,
                    format!("expires {when}, in {}{issued}", timefmt::span(left)),
                    None,
                )
            }
        }
        Expiry::Never => {
            let data = info
                .data_access_expires_at
                .map(|d| format!("; but data access lapses {} ({}): this is an extended user token, not a permanent one", timefmt::utc(d), timefmt::span(d.as_second() - now.as_second())))
                .unwrap_or_default();
            let old = info
                .issued_at
                .is_some_and(|i| now.as_second() - i.as_second() > 60 * 86_400);
            let mark = if old || !data.is_empty() {
                Mark::Warn
            } else {
                Mark::Pass
            };
            let fix = old.then(|| "the runbook rotates tokens every 60 days: generate a new token and revoke this one".to_string());
            check("expiry", mark, format!("never expires{data}{issued}"), fix)
        }
        Expiry::Unknown => check(
            "expiry",
            Mark::Warn,
            format!("Meta did not report an expiry{issued}"),
            None,
        ),
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn describe_phone(p: &PhoneNumber) -> String {
    let mut s = format!(
        "{} is {}",
        p.id,
        p.display_phone_number
            .as_deref()
            .unwrap_or("(no display number)")
    );
    if let Some(n) = &p.verified_name {
        s.push_str(&format!(" ({n})"));
    }
    if let Some(q) = &p.quality_rating {
        s.push_str(&format!(", quality {q}"));
    }
    s
}

fn evaluate_phone(t: &TokenConfig, info: &TokenInfo, obs: &Observation, checks: &mut Vec<Check>) {
    let numbers = match &obs.waba_numbers {
        Some(Ok(n)) => n.as_slice(),
        _ => &[],
    };
    let list = |ns: &[PhoneNumber]| {
        ns.iter()
            .map(|p| {
                format!(
                    "{} (id {})",
                    p.display_phone_number.as_deref().unwrap_or("?"),
                    p.id
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(phone_id) = &t.phone_number_id else {
        let detail = if numbers.is_empty() {
            "`phone_number_id` not configured".to_string()
        } else {
            format!(
                "`phone_number_id` not configured; the WABA's numbers: {}",
                list(numbers)
            )
        };
        checks.push(check("phone", Mark::Skip, detail, None));
        return;
    };
    match &obs.phone {
        Some(Ok(p)) => {
            let red = p.quality_rating.as_deref() == Some("RED");
            let (mark, fix) = if red {
                (Mark::Warn, Some("quality RED: Meta may limit this number's messaging; review recent message quality in WhatsApp Manager".to_string()))
            } else {
                (Mark::Pass, None)
            };
            checks.push(check("phone", mark, describe_phone(p), fix));
        }
        Some(Err(GraphError::Misconfigured(api))) if api.code == 100 => {
            // Name the mix-up when we can see it (reference section 9, mistake 7).
            let by_display = numbers.iter().find(|p| p.display_phone_number.as_deref().map(digits).is_some_and(|d| !d.is_empty() && d == digits(phone_id)));
            let (detail, fix) = if let Some(p) = by_display {
                (format!("{phone_id} is the phone number itself, not its id"), format!("you entered the phone number; its id is {}: set `phone_number_id = \"{}\"`", p.id, p.id))
            } else if t.waba_id.as_deref() == Some(phone_id.as_str()) || info.waba_ids().contains(phone_id) {
                let hint = if numbers.is_empty() { String::new() } else { format!("; its numbers are {}", list(numbers)) };
                (format!("{phone_id} is a WhatsApp Business Account id, not a phone-number id{hint}"), "set `phone_number_id` to the id shown under WhatsApp > API Setup > Phone number ID".to_string())
            } else {
                let hint = if numbers.is_empty() { String::new() } else { format!("; the WABA's numbers are {}", list(numbers)) };
                (format!("phone number not found: no phone number with id {phone_id} is visible to this token{hint}"), "copy the Phone number ID from WhatsApp > API Setup into `phone_number_id`".to_string())
            };
            checks.push(check("phone", Mark::Fail, detail, Some(fix)));
        }
        Some(Err(GraphError::Misconfigured(api))) if (200..300).contains(&api.code) || api.code == 10 => checks.push(check(
            "phone",
            Mark::Fail,
            format!("the token may not read phone number {phone_id} ({api})"),
            Some(format!("the system user lacks the WhatsApp Business Account that owns this number: {NEW_TOKEN_STEPS}")),
        )),
        Some(Err(e)) => checks.push(graph_failure("phone", e)),
        None => {}
    }
}

fn send_check(id: &'static str, r: &Result<String, GraphError>, what: &str) -> Check {
    match r {
        Ok(mid) => check(id, Mark::Pass, format!("{what} accepted by WhatsApp (message id {mid})"), None),
        Err(GraphError::Misconfigured(api)) if api.code == 131030 => check(
            id,
            Mark::Fail,
            format!("recipient not allowed ({api})"),
            Some("while the app is in development, add the number to the allowed recipients under WhatsApp > API Setup > To, and confirm it".into()),
        ),
        Err(GraphError::Misconfigured(api)) if api.code == 132001 => check(
            id,
            Mark::Fail,
            format!("template not found ({api})"),
            Some("create and get approval for the template in WhatsApp Manager > Message templates, or pass an approved one with --template NAME --language CODE".into()),
        ),
        Err(e) => graph_failure(id, e),
    }
}

/// The report as the checklist people read.
///
/// Every string is passed through [`terminal_safe`]: details quote what Graph sent (the
/// application's name, a phone number's verified name, error messages), and an ANSI escape
/// or a carriage return in them would rewrite the operator's terminal or forge a ✓ line.
/// Only this rendering is filtered; the JSON output escapes control characters itself.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for t in &report.tokens {
        let fp = t
            .fingerprint
            .map(|f| format!("  (fingerprint {f})"))
            .unwrap_or_default();
        out.push_str(&format!("{}{fp}\n", terminal_safe(&t.token)));
        for c in &t.checks {
            render_check(&mut out, c);
        }
        out.push('\n');
    }
    for a in &report.apps {
        out.push_str(&format!(
            "{} app {}  (used by {})\n",
            a.kind.product(),
            terminal_safe(&a.app_id),
            terminal_safe(&a.tokens.join(", "))
        ));
        render_check(&mut out, &a.check);
        out.push('\n');
    }
    let g = &report.graph_version;
    out.push_str(&format!(
        "{} {}\n",
        g.mark.symbol(),
        terminal_safe(&g.detail)
    ));
    if let Some(fix) = &g.fix {
        out.push_str(&format!("  fix: {}\n", terminal_safe(fix)));
    }
    let bad = report.tokens.iter().filter(|t| !t.healthy()).count();
    out.push_str(&format!(
        "\n{} token(s) checked: {} healthy, {} with problems\n",
        report.tokens.len(),
        report.tokens.len() - bad,
        bad
    ));
    if !report.apps.is_empty() {
        let count = |m: Mark| report.apps.iter().filter(|a| a.check.mark == m).count();
        out.push_str(&format!(
            "{} product app(s) checked: {} accepted, {} with problems, {} not checkable\n",
            report.apps.len(),
            count(Mark::Pass),
            count(Mark::Fail) + count(Mark::Warn),
            count(Mark::Skip)
        ));
    }
    out
}

/// One check as a line (mark, id, detail) and, when it failed, its fix beneath.
fn render_check(out: &mut String, c: &Check) {
    out.push_str(&format!(
        "  {} {:<13} {}\n",
        c.mark.symbol(),
        c.id,
        terminal_safe(&c.detail)
    ));
    if let Some(fix) = &c.fix {
        out.push_str(&format!("  {:<15} fix: {}\n", "", terminal_safe(fix)));
    }
}

/// `s` without what a terminal would act on: ANSI escape sequences (CSI `ESC [ ... final`,
/// OSC `ESC ] ... BEL/ST`, two-byte `ESC x`), other C0 and C1 control characters (a line
/// break or tab becomes a space, so one check stays one line), and the bidirectional
/// overrides that reorder what is shown.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: a string ended by BEL or ST (`ESC \`).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(n) = chars.next() {
                        if n == '\u{7}' || n == '\u{9c}' {
                            break;
                        }
                        if n == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                // A two-byte sequence (`ESC c` resets the terminal) or a lone ESC.
                _ => {}
            },
            // The 8-bit CSI introduces a sequence as ESC [ does.
            '\u{9b}' => {
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::graph::{ApiError, GranularScope};

    const WABA: &str = "102290129340398";
    const NOW: i64 = 1_780_000_000;

    #[test]
    fn terminal_safe_drops_escapes_and_controls_and_keeps_text() {
        let cases = [
            ("BillByteKOT", "BillByteKOT"),
            ("\u{1b}[31mred\u{1b}[0m", "red"),
            ("a\u{1b}]0;owned\u{7}b", "ab"),
            (
                "a\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\b",
                "alinkb",
            ),
            ("x\u{1b}cy", "xy"),
            ("x\u{9b}2Jy", "xy"),
            ("ok\r✓ valid forged", "ok ✓ valid forged"),
            ("a\nb\tc\u{0}d\u{7f}e\u{85}f", "a b cdef"),
            ("abc\u{202e}fed", "abcfed"),
            ("Café 東京", "Café 東京"),
            ("trailing\u{1b}", "trailing"),
        ];
        for (input, want) in cases {
            assert_eq!(terminal_safe(input), want, "{input:?}");
        }
    }

    fn cfg() -> TokenConfig {
        TokenConfig {
            name: "prod".into(),
            kind: crate::config::Kind::Whatsapp,
            app: None,
            page: None,
            ad_accounts: Vec::new(),
            business: None,
            phone_number_id: Some("106540352242922".into()),
            waba_id: Some(WABA.into()),
            store: StoreConfig::File {
                path: None,
                key: None,
            },
            schedule: crate::config::Schedule {
                cron: crate::config::DEFAULT_CRON.into(),
                timezone: "UTC".into(),
            },
            policy: crate::policy::Policy::default(),
            rotation: crate::config::RotationConfig::default(),
            targets: Vec::new(),
        }
    }

    fn info() -> TokenInfo {
        let scopes: Vec<String> = graph::WHATSAPP_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        TokenInfo {
            is_valid: Some(true),
            app_id: Some("1".into()),
            token_type: Some("SYSTEM_USER".into()),
            application: Some("A".into()),
            expires_at: Expiry::At(Timestamp::from_second(NOW + 50 * 86_400).unwrap()),
            data_access_expires_at: None,
            issued_at: Some(Timestamp::from_second(NOW - 10 * 86_400).unwrap()),
            granular_scopes: scopes
                .iter()
                .map(|s| GranularScope {
                    scope: s.clone(),
                    target_ids: vec!["5".into(), WABA.into()],
                })
                .collect(),
            scopes,
            user_id: None,
            profile_id: None,
            error: None,
        }
    }

    fn phone(id: &str, display: &str) -> PhoneNumber {
        PhoneNumber {
            id: id.into(),
            display_phone_number: Some(display.into()),
            verified_name: Some("Shop".into()),
            quality_rating: Some("GREEN".into()),
            code_verification_status: None,
            name_status: None,
        }
    }

    fn obs(
        info: Result<TokenInfo, GraphError>,
        phone: Option<Result<PhoneNumber, GraphError>>,
    ) -> Observation {
        Observation {
            store: "file store".into(),
            value: Ok(Secret::new(format!("EAAG{}", "x".repeat(100)))),
            info: Some(info),
            phone,
            waba: None,
            waba_numbers: None,
            sends: None,
            kind_proof: graph::Proof::default(),
            meta_app: None,
        }
    }

    fn marks(r: &TokenReport) -> Vec<(&'static str, Mark)> {
        r.checks.iter().map(|c| (c.id, c.mark)).collect()
    }

    fn api(code: i64, sub: Option<i64>) -> ApiError {
        ApiError {
            status: 400,
            code,
            subcode: sub,
            kind: None,
            message: "m".into(),
            details: None,
            fbtrace_id: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    #[test]
    fn healthy_system_user_token_passes_everything() {
        let r = evaluate(
            &cfg(),
            "1",
            &obs(
                Ok(info()),
                Some(Ok(phone("106540352242922", "+1 555-010-4477"))),
            ),
            now(),
        );
        assert!(r.healthy(), "{r:#?}");
        assert_eq!(
            marks(&r),
            vec![
                ("store", Mark::Pass),
                ("value", Mark::Pass),
                ("valid", Mark::Pass),
                ("type", Mark::Pass),
                ("expiry", Mark::Pass),
                ("scopes", Mark::Pass),
                ("waba", Mark::Pass),
                ("phone", Mark::Pass)
            ]
        );
    }

    #[test]
    fn expired_revoked_and_scopeless_tokens_fail_with_a_fix() {
        let mut expired = info();
        expired.is_valid = Some(false);
        expired.error = Some(api(190, Some(463)));
        let r = evaluate(&cfg(), "1", &obs(Ok(expired), None), now());
        let valid = r.checks.iter().find(|c| c.id == "valid").unwrap();
        assert_eq!(valid.mark, Mark::Fail);
        assert!(
            valid.detail.contains("expired")
                && valid.fix.as_deref().unwrap().contains("Generate new token")
        );

        let mut revoked = info();
        revoked.is_valid = Some(false);
        revoked.error = Some(api(190, Some(466)));
        let r = evaluate(&cfg(), "1", &obs(Ok(revoked), None), now());
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "valid" && c.detail.contains("revoked"))
        );

        let mut scopeless = info();
        scopeless.scopes = vec!["business_management".into()];
        scopeless.granular_scopes.clear();
        // No WhatsApp scopes means no target_ids: the WABA read decides, and was refused.
        let mut o = obs(Ok(scopeless), Some(Ok(phone("106540352242922", "+1"))));
        o.waba = Some(Err(GraphError::Misconfigured(crate::graph::ApiError {
            status: 400,
            code: 200,
            subcode: None,
            kind: None,
            message: "(#200) Permissions error".into(),
            details: None,
            fbtrace_id: None,
        })));
        let r = evaluate(&cfg(), "1", &o, now());
        let s = r.checks.iter().find(|c| c.id == "scopes").unwrap();
        assert_eq!(s.mark, Mark::Fail);
        assert!(
            s.detail
                .contains("whatsapp_business_management and whatsapp_business_messaging"),
            "{}",
            s.detail
        );
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "waba" && c.mark == Mark::Fail && c.detail.contains("refused"))
        );

        // Another WABA in the targets: not among them, the runbook's words.
        let mut elsewhere = info();
        for g in &mut elsewhere.granular_scopes {
            g.target_ids = vec!["5".into()];
        }
        let r = evaluate(&cfg(), "1", &obs(Ok(elsewhere), None), now());
        assert!(r.checks.iter().any(|c| c.id == "waba"
            && c.mark == Mark::Fail
            && c.detail.contains("business account not found")));
    }

    /// Issue 13, point 2: Meta's own SYSTEM_USER example has no target_ids; doctor says the
    /// WABA was decided by reading it, and passes.
    #[test]
    fn a_waba_without_target_ids_is_decided_by_the_read_and_doctor_says_so() {
        let mut general = info();
        for g in &mut general.granular_scopes {
            g.target_ids.clear();
        }
        let mut o = obs(Ok(general), Some(Ok(phone("106540352242922", "+1"))));
        o.waba = Some(Ok(()));
        let r = evaluate(&cfg(), "1", &o, now());
        let w = r.checks.iter().find(|c| c.id == "waba").unwrap();
        assert_eq!(w.mark, Mark::Pass, "{}", w.detail);
        assert!(w.detail.contains("decided by the read"), "{}", w.detail);
        assert!(r.healthy());
        let listed = evaluate(&cfg(), "1", &obs(Ok(info()), None), now());
        let w = listed.checks.iter().find(|c| c.id == "waba").unwrap();
        assert!(w.detail.contains("decided by debug_token"), "{}", w.detail);
    }

    #[test]
    fn user_and_temporary_tokens_are_flagged() {
        let mut user = info();
        user.token_type = Some("USER".into());
        let r = evaluate(&cfg(), "1", &obs(Ok(user), None), now());
        assert!(r.checks.iter().any(|c| c.id == "type"
            && c.mark == Mark::Fail
            && c.detail.contains("owner's session")));
        let mut temp = info();
        temp.issued_at = Some(Timestamp::from_second(NOW - 3600).unwrap());
        temp.expires_at = Expiry::At(Timestamp::from_second(NOW + 23 * 3600).unwrap());
        let r = evaluate(&cfg(), "1", &obs(Ok(temp), None), now());
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "type" && c.mark == Mark::Fail && c.detail.contains("24 hours"))
        );
        let mut extended = info();
        extended.token_type = Some("USER".into());
        extended.expires_at = Expiry::Never;
        extended.data_access_expires_at = Some(Timestamp::from_second(NOW + 80 * 86_400).unwrap());
        let r = evaluate(&cfg(), "1", &obs(Ok(extended), None), now());
        assert!(r.checks.iter().any(|c| c.id == "expiry"
            && c.mark == Mark::Warn
            && c.detail.contains("not a permanent one")));
    }

    #[test]
    fn phone_mixups_are_named() {
        let mut t = cfg();
        t.phone_number_id = Some("15550104477".into());
        let mut o = obs(
            Ok(info()),
            Some(Err(GraphError::Misconfigured(api(100, Some(33))))),
        );
        o.waba_numbers = Some(Ok(vec![phone("106540352242922", "+1 555-010-4477")]));
        let r = evaluate(&t, "1", &o, now());
        let p = r.checks.iter().find(|c| c.id == "phone").unwrap();
        assert_eq!(p.mark, Mark::Fail);
        assert!(
            p.fix
                .as_deref()
                .unwrap()
                .contains("you entered the phone number; its id is 106540352242922"),
            "{p:?}"
        );

        t.phone_number_id = Some(WABA.into());
        let r = evaluate(&t, "1", &o, now());
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "phone" && c.detail.contains("WhatsApp Business Account id"))
        );

        t.phone_number_id = Some("999".into());
        let r = evaluate(&t, "1", &o, now());
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "phone" && c.detail.starts_with("phone number not found"))
        );

        let o = obs(
            Ok(info()),
            Some(Err(GraphError::Misconfigured(api(200, None)))),
        );
        let r = evaluate(&cfg(), "1", &o, now());
        assert!(r.checks.iter().any(|c| {
            c.id == "phone"
                && c.fix
                    .as_deref()
                    .unwrap_or("")
                    .contains("lacks the WhatsApp Business Account")
        }));
    }

    #[test]
    fn own_credentials_and_transient_never_read_as_a_dead_token() {
        for e in [
            GraphError::OwnCredentials(api(190, None)),
            GraphError::Transient(graph::Transient::Timeout),
        ] {
            let r = evaluate(&cfg(), "1", &obs(Err(e), None), now());
            let v = r.checks.iter().find(|c| c.id == "valid").unwrap();
            assert_eq!(v.mark, Mark::Fail);
            assert!(
                !v.detail.contains("dead") && !v.detail.contains("expired"),
                "{}",
                v.detail
            );
            assert!(
                v.detail.contains("app credentials") || v.detail.contains("not the token's fault"),
                "{}",
                v.detail
            );
        }
        // Whose trouble a refused inspection is, from the app token's own inspection.
        let refused = || Err(GraphError::OwnCredentials(api(100, None)));
        let mut o = obs(refused(), None);
        o.meta_app = Some(Ok(()));
        let r = evaluate(&cfg(), "1", &o, now());
        let v = r.checks.iter().find(|c| c.id == "valid").unwrap();
        assert!(v.detail.contains("belongs to another app"), "{}", v.detail);
        assert!(v.fix.as_deref().unwrap().contains("Access Token Debugger"));
        let mut o = obs(refused(), None);
        o.meta_app = Some(Err(GraphError::OwnCredentials(api(190, None))));
        let r = evaluate(&cfg(), "1", &o, now());
        let v = r.checks.iter().find(|c| c.id == "valid").unwrap();
        assert!(v.detail.contains("own app secret"), "{}", v.detail);
        assert!(v.fix.as_deref().unwrap().contains("App settings > Basic"));
    }

    #[test]
    fn wrongly_pasted_values_and_other_apps_are_named() {
        let mut o = obs(Ok(info()), None);
        o.value = Ok(Secret::new(
            "Bearer EAAGxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ));
        let r = evaluate(&cfg(), "2", &o, now());
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "value" && c.mark == Mark::Fail && c.detail.contains("Bearer"))
        );
        assert!(
            r.checks
                .iter()
                .any(|c| c.id == "app" && c.mark == Mark::Fail)
        );
    }

    #[test]
    fn send_failures_map_to_their_fixes() {
        let c = send_check(
            "send_text",
            &Err(GraphError::Misconfigured(api(131030, None))),
            "text",
        );
        assert!(c.fix.unwrap().contains("allowed recipients"));
        let c = send_check(
            "send_template",
            &Err(GraphError::Misconfigured(api(132001, None))),
            "template",
        );
        assert!(c.fix.unwrap().contains("Message templates"));
    }

    fn app_obs(
        kind: Kind,
        outcome: Result<Result<AppCheck, GraphError>, SecretRefError>,
    ) -> AppObservation {
        AppObservation {
            kind,
            app_id: "990011223344556".into(),
            secret_ref: SecretRef::Env("TH_SECRET".into()),
            tokens: vec!["a".into(), "b".into()],
            outcome,
        }
    }

    #[test]
    fn each_product_app_outcome_has_its_mark_and_words() {
        let ok = evaluate_app(&app_obs(Kind::Threads, Ok(Ok(AppCheck::Accepted))));
        assert_eq!(ok.check.mark, Mark::Pass);
        assert!(
            ok.check
                .detail
                .contains("the Threads app 990011223344556's secret is accepted")
        );
        assert_eq!(ok.tokens, ["a", "b"]);

        for code in [1, 101] {
            let refused = evaluate_app(&app_obs(
                Kind::Threads,
                Ok(Err(GraphError::OwnCredentials(api(code, None)))),
            ));
            assert_eq!(refused.check.mark, Mark::Fail);
            let fix = refused.check.fix.unwrap();
            assert!(fix.contains("Threads app secret"), "{fix}");
            assert!(fix.contains("two ids and secrets"), "{fix}");
            assert!(fix.contains("environment variable `TH_SECRET`"), "{fix}");
            assert!(fix.contains("no longer works"), "{fix}");
        }

        let unread = evaluate_app(&app_obs(
            Kind::Threads,
            Err(SecretRefError::EnvMissing("TH_SECRET".into())),
        ));
        assert_eq!(unread.check.mark, Mark::Fail);
        assert!(unread.check.detail.contains("`TH_SECRET`"));

        let later = evaluate_app(&app_obs(
            Kind::Threads,
            Ok(Err(GraphError::Transient(Transient::Timeout))),
        ));
        assert_eq!(later.check.mark, Mark::Warn, "{:?}", later.check);
        assert!(later.check.detail.contains("says nothing about the secret"));

        let other = evaluate_app(&app_obs(
            Kind::Threads,
            Ok(Err(GraphError::Misconfigured(api(100, None)))),
        ));
        assert_eq!(other.check.mark, Mark::Fail);

        let ig = evaluate_app(&app_obs(Kind::Instagram, Ok(Ok(AppCheck::NotCheckable))));
        assert_eq!(ig.check.mark, Mark::Skip);
        assert!(
            ig.check
                .detail
                .contains("Meta offers no call that checks an Instagram app's secret alone"),
            "{}",
            ig.check.detail
        );
    }

    #[test]
    fn a_failing_product_app_makes_the_report_unhealthy_and_is_rendered_safely() {
        let mut app = evaluate_app(&app_obs(
            Kind::Threads,
            Ok(Err(GraphError::OwnCredentials(api(1, None)))),
        ));
        app.tokens = vec!["evil\u{1b}[2Jname".into()];
        let mut report = Report {
            graph_version: check("graph_version", Mark::Pass, "Graph API v25.0", None),
            tokens: Vec::new(),
            apps: vec![app],
        };
        assert!(!report.healthy());
        let text = render_text(&report);
        assert!(
            text.contains("Threads app 990011223344556  (used by evilname)"),
            "{text}"
        );
        assert!(text.contains("1 product app(s) checked: 0 accepted, 1 with problems"));
        report.apps[0].check.mark = Mark::Skip;
        assert!(report.healthy());
    }
}
