//! Meta Graph API client: `debug_token`, phone-number reads, test messages, and the token calls
//! of a rotation (refresh, mint, revoke).
//!
//! Only this module knows Graph URLs and JSON shapes ([`wire`] is private). Every call with a
//! token carries an `appsecret_proof`; tokens travel in `Authorization` headers, except where
//! Meta wants them in the query string (`debug_token`'s `input_token`, and `oauth/access_token`
//! and `oauth/revoke`, which also carry the app secret there), which is why no request URL is
//! ever logged or put into an error (reqwest errors are stripped of their URL). Transient
//! failures are retried with exponential backoff and jitter; a rate limit is waited out only
//! when Meta asks for a few seconds at most ([`MAX_RATE_LIMIT_WAIT`]), otherwise the call ends
//! at once as rate limited, carrying Meta's wait. Calls that create a token (refresh, mint) are sent again only when
//! Meta cannot have acted on them: see [`GraphClient::mint_token`].

mod fleet;
pub mod throttle;
mod wire;

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::{AUTHORIZATION, HeaderMap};

/// Meta's vocabulary lives in [`crate::meta`] (pure, below `config` and the usability rule):
/// the error classification, `debug_token`'s answers, the versions and the WhatsApp scopes;
/// re-exported so the client's paths keep working.
pub use crate::meta::error::{
    self, ApiError, CallKind, GraphError, Transient, classify, dead_reason,
};
pub use crate::meta::token::{Expiry, GranularScope, PhoneNumber, Proof, TokenInfo};
pub use crate::meta::{WHATSAPP_SCOPES, version};
pub use fleet::BATCH_SIZE;
pub use throttle::Throttle;

use crate::config::MetaConfig;
use crate::meta::kind::Kind;
use crate::secret::{Secret, appsecret_proof};
use version::ApiVersion;

/// Longest wait a rate limit may impose inside one call; beyond it the call ends at once as
/// [`Transient::RateLimited`], with Meta's wait in `retry_after`, and the caller tries again on
/// its next run. Short: the daemon checks its tokens one after another, so a wait sat out here
/// stalls every other token's check, its emails and the loop's heartbeat (`/healthz`) for as
/// long. A few seconds rides out a momentary throttle; Meta's usual "wait a minute" (the
/// default `Retry-After` of an app-level limit) is not worth holding the loop for.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);

/// The facts worth keeping from `debug_token`'s answer about `token`.
pub fn facts_of(token: &Secret, info: &TokenInfo) -> crate::policy::TokenFacts {
    use crate::policy::{Expires, TokenFacts};
    TokenFacts {
        fingerprint: token.fingerprint(),
        app_id: info.app_id.clone(),
        application: info.application.clone(),
        token_type: info.token_type.clone(),
        expires: match info.expires_at {
            Expiry::Never => Expires::Never,
            Expiry::At(t) => Expires::At(t),
            Expiry::Unknown => Expires::Unknown,
        },
        data_access_expires_at: info.data_access_expires_at,
        issued_at: info.issued_at,
        scopes: info.scopes.clone(),
        wabas: info.waba_ids(),
    }
}

/// A token from [`GraphClient::refresh_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    /// The new token. The one it was made from keeps working until its own expiry.
    pub token: Secret,
    /// Meta's `expires_in`: about 60 days. `None` when Meta did not say; inspect the token
    /// with [`GraphClient::debug_token`] for its exact expiry either way.
    pub expires_in: Option<Duration>,
}

/// The account a token of an Instagram or Threads kind speaks for (its `GET /me`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindAccount {
    /// The Instagram `user_id` or Threads `id`.
    pub id: String,
    /// The username, when Meta gave it.
    pub username: Option<String>,
}

/// What [`GraphClient::check_kind_app`] learned of a product app's own secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppCheck {
    /// Meta accepted the app id and secret (Threads gave the app its app access token, which
    /// was dropped unread).
    Accepted,
    /// Meta offers no call that checks this kind's app secret alone (the Instagram API with
    /// Instagram Login has no app access token): it is checked only when a short-lived token
    /// is exchanged. No request was made.
    NotCheckable,
}

/// Whether a call that failed transiently may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Reads, `debug_token`, revoke: sending twice does no harm.
    Always,
    /// Calls that create a token (mint, refresh): sent again only when Meta cannot have acted
    /// on the request, that is when no connection was made or Meta answered with a rate limit.
    /// A timeout, a 5xx or a cut-short answer may follow a token that Meta did make.
    IfNotActedOn,
}

/// The app credentials tokenwarden inspects tokens with.
#[derive(Clone)]
pub struct AppCredentials {
    /// The app id.
    pub app_id: String,
    /// The app secret.
    pub app_secret: Secret,
}

/// Why [`GraphClient::from_config`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `meta.app_secret` cannot be read: fix the reference or the secret (a config error).
    #[error("`meta.app_secret`: {0}")]
    AppSecret(crate::config::SecretRefError),
    /// The HTTP client cannot be built (no TLS roots, a proxy it cannot use): fix the host.
    #[error("{0}")]
    Client(GraphError),
}

/// Retry settings for transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// First delay; doubles each attempt, capped at 30 s, with jitter.
    pub base_delay: Duration,
}

/// A Graph API client for one app and one pinned version.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: reqwest::Url,
    version: ApiVersion,
    app: AppCredentials,
    retry: RetryPolicy,
}

impl GraphClient {
    /// A client from the `[meta]` config and the resolved app secret.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots, for example).
    pub fn new(meta: &MetaConfig, app_secret: Secret) -> Result<Self, GraphError> {
        let mut builder = reqwest::Client::builder()
            .timeout(meta.timeout)
            .connect_timeout(meta.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
            // Requests carry the app secret and tokens (query and headers): a redirect would
            // hand them to whatever host it names, so a 3xx is an error (see `receive`).
            .redirect(reqwest::redirect::Policy::none())
            // `http_proxy`/`https_proxy`/`all_proxy` from the environment would route the
            // app secret through a proxy nobody configured for it, loopback included.
            .no_proxy();
        if let Some(proxy) = &meta.proxy {
            builder = builder.proxy(graph_proxy(proxy)?);
        }
        let http = builder
            .build()
            .map_err(|e| GraphError::Transient(Transient::Network(e.without_url().to_string())))?;
        Ok(GraphClient {
            http,
            base: meta.base_url.clone(),
            version: meta.api_version,
            app: AppCredentials {
                app_id: meta.app_id.clone(),
                app_secret,
            },
            retry: RetryPolicy {
                attempts: meta.attempts.max(1),
                base_delay: meta.retry_delay,
            },
        })
    }

    /// A client from the `[meta]` config, reading the app secret from its reference now: the
    /// one place the app secret is resolved for a client.
    ///
    /// # Errors
    /// [`SetupError::AppSecret`] when the secret cannot be read (fix the reference: the config
    /// is unusable), [`SetupError::Client`] when the HTTP client cannot be built.
    pub fn from_config(meta: &MetaConfig) -> Result<Self, SetupError> {
        let secret = meta.app_secret.resolve().map_err(SetupError::AppSecret)?;
        GraphClient::new(meta, secret).map_err(SetupError::Client)
    }

    /// The pinned version.
    pub fn version(&self) -> ApiVersion {
        self.version
    }

    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("http(s) base URL");
            path.pop_if_empty().push(&self.version.to_string());
            for s in segments {
                path.push(s);
            }
        }
        url
    }

    fn app_token(&self) -> Secret {
        Secret::new(format!(
            "{}|{}",
            self.app.app_id,
            self.app.app_secret.expose()
        ))
    }

    /// Inspects `token` with `debug_token`, authenticated with the app token.
    ///
    /// An invalid token is not an error: it comes back with `is_valid: false` and the reason.
    ///
    /// # Errors
    /// [`GraphError::OwnCredentials`] when Meta refuses the inspector (wrong app secret, a token
    /// of another app), [`GraphError::Transient`] when Graph could not answer.
    pub async fn debug_token(&self, token: &Secret) -> Result<TokenInfo, GraphError> {
        let app_token = self.app_token();
        let proof = appsecret_proof(&self.app.app_secret, app_token.expose());
        let url = self.url(&["debug_token"]);
        let parsed: wire::DebugTokenResponse = self
            .send(CallKind::Inspect, || {
                self.http
                    .get(url.clone())
                    .query(&[("input_token", token.expose()), ("appsecret_proof", &proof)])
                    .header(AUTHORIZATION, format!("Bearer {}", app_token.expose()))
            })
            .await?;
        Ok(token_info(parsed.data))
    }

    /// Whether Meta accepts tokenwarden's own app credentials: `debug_token` of the app token
    /// itself, authenticated as for every inspection. Tells the two causes of a refused
    /// inspection apart without reading Meta's message text (reference section 8): the app's
    /// secret wrong or reset (this call is refused too: the app's trouble, one alert for the
    /// app) from a token of another app (this call passes: the token's trouble).
    ///
    /// # Errors
    /// [`GraphError::OwnCredentials`] when Meta refuses the app token (as inspector or as the
    /// inspected token), [`GraphError::Misconfigured`] for an app id Meta does not know,
    /// [`GraphError::Transient`] when Graph could not answer.
    pub async fn app_credentials(&self) -> Result<(), GraphError> {
        let info = self.debug_token(&self.app_token()).await?;
        match info.invalid_reason() {
            Some(api) => Err(GraphError::OwnCredentials(api)),
            None => Ok(()),
        }
    }

    /// The id of tokenwarden's own app: names the app in its alerts.
    pub fn app_id(&self) -> &str {
        &self.app.app_id
    }

    /// The fingerprint of the secret tokenwarden holds for its app: tells a new secret from
    /// the refused one.
    pub fn app_secret_fingerprint(&self) -> crate::secret::Fingerprint {
        self.app.app_secret.fingerprint()
    }

    /// Reads a phone number with `token`: the runbook's proof that the token works.
    ///
    /// # Errors
    /// Classified [`GraphError`]: a dead token, a wrong id or missing asset, transient.
    pub async fn phone_number(
        &self,
        token: &Secret,
        phone_number_id: &str,
    ) -> Result<PhoneNumber, GraphError> {
        // An empty id would read the version root instead of failing: refuse it here.
        if phone_number_id.is_empty() {
            return Err(GraphError::Misconfigured(local_error(
                "the phone-number id is empty",
            )));
        }
        let url = self.url(&[phone_number_id]);
        let fields = "id,display_phone_number,verified_name,quality_rating,code_verification_status,name_status";
        let p: wire::PhoneNumberWire = self
            .send_with(token, CallKind::WithToken, || {
                self.http.get(url.clone()).query(&[("fields", fields)])
            })
            .await?;
        Ok(phone(p))
    }

    /// Lists the phone numbers of a WhatsApp Business Account, following pages.
    ///
    /// # Errors
    /// Classified [`GraphError`].
    pub async fn waba_phone_numbers(
        &self,
        token: &Secret,
        waba_id: &str,
    ) -> Result<Vec<PhoneNumber>, GraphError> {
        if waba_id.is_empty() {
            return Err(GraphError::Misconfigured(local_error(
                "the WABA id is empty",
            )));
        }
        let url = self.url(&[waba_id, "phone_numbers"]);
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        // Bounded: a WABA has a handful of numbers; a paging loop must not run forever.
        for _ in 0..20 {
            let page: wire::PhoneNumberPage = self
                .send_with(token, CallKind::WithToken, || {
                    let mut q = vec![(
                        "fields",
                        "id,display_phone_number,verified_name,quality_rating".to_string(),
                    )];
                    if let Some(a) = &after {
                        q.push(("after", a.clone()));
                    }
                    self.http.get(url.clone()).query(&q)
                })
                .await?;
            let n = page.data.len();
            out.extend(page.data.into_iter().map(phone));
            let paging = page.paging;
            let next = paging.as_ref().and_then(|p| p.next.as_ref()).is_some();
            after = paging.and_then(|p| p.cursors).and_then(|c| c.after);
            if !next || n == 0 || after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Reads a WhatsApp Business Account with `token` (`GET /{waba_id}?fields=id,name`): the
    /// proof that the token reaches it when `debug_token` lists no `target_ids`.
    ///
    /// # Errors
    /// Classified [`GraphError`]: code 200 (no access to the asset) and 100 (no such object,
    /// or not readable) are [`GraphError::Misconfigured`].
    pub async fn read_waba(&self, token: &Secret, waba_id: &str) -> Result<(), GraphError> {
        if waba_id.is_empty() {
            return Err(GraphError::Misconfigured(local_error(
                "the WABA id is empty",
            )));
        }
        let url = self.url(&[waba_id]);
        let _: wire::Node = self
            .send_with(token, CallKind::WithToken, || {
                self.http.get(url.clone()).query(&[("fields", "id,name")])
            })
            .await?;
        Ok(())
    }

    /// Reads a Facebook Page with `token` (`GET /{page_id}?fields=id,name`): the proof that a
    /// Page token works.
    ///
    /// # Errors
    /// Classified [`GraphError`].
    pub async fn read_page(&self, token: &Secret, page_id: &str) -> Result<(), GraphError> {
        if page_id.is_empty() {
            return Err(GraphError::Misconfigured(local_error(
                "the Page id is empty",
            )));
        }
        let url = self.url(&[page_id]);
        let _: wire::Node = self
            .send_with(token, CallKind::WithToken, || {
                self.http.get(url.clone()).query(&[("fields", "id,name")])
            })
            .await?;
        Ok(())
    }

    /// Whether the Page is subscribed to this client's app (`GET /{page_id}/subscribed_apps`
    /// with the Page token): what Messenger needs to deliver the Page's messages to the app.
    ///
    /// # Errors
    /// Classified [`GraphError`].
    pub async fn page_subscribed(&self, token: &Secret, page_id: &str) -> Result<bool, GraphError> {
        let url = self.url(&[page_id, "subscribed_apps"]);
        let apps: wire::SubscribedApps = self
            .send_with(token, CallKind::WithToken, || self.http.get(url.clone()))
            .await?;
        Ok(apps.data.iter().any(|a| a.id == self.app.app_id))
    }

    /// Fetches a customer's business integration system-user token again, without the
    /// customer: `POST /{client_business_id}/system_user_access_tokens` with the form fields
    /// `fetch_only=true` and `appsecret_proof` (of the partner token), `Authorization: Bearer
    /// PARTNER` (the Tech Provider's own system-user token). Meta may hand back the current
    /// token itself. Sent once, as a mint.
    ///
    /// # Errors
    /// [`GraphError::TokenDead`] when the partner token is dead, [`GraphError::Misconfigured`]
    /// when Meta refuses (the customer removed the app, a wrong business id), transient.
    pub async fn fetch_business_token(
        &self,
        partner_token: &Secret,
        client_business_id: &str,
    ) -> Result<Secret, GraphError> {
        let url = self.url(&[client_business_id, "system_user_access_tokens"]);
        let proof = appsecret_proof(&self.app.app_secret, partner_token.expose());
        let t: wire::BusinessToken = self
            .send_json(CallKind::WithToken, Replay::IfNotActedOn, || {
                self.http
                    .post(url.clone())
                    .header(AUTHORIZATION, format!("Bearer {}", partner_token.expose()))
                    .form(&[("fetch_only", "true"), ("appsecret_proof", proof.as_str())])
            })
            .await?;
        new_token(t.access_token)
    }

    /// Reads an ad account's status with `token` (`GET /act_{id}?fields=account_status,name`):
    /// the proof that a Marketing API token works for it.
    ///
    /// # Errors
    /// Classified [`GraphError`]; an answer without `account_status` is transient (retried).
    pub async fn ad_account_status(
        &self,
        token: &Secret,
        account_id: &str,
    ) -> Result<i64, GraphError> {
        let node = format!("act_{account_id}");
        let url = self.url(&[&node]);
        let a: wire::AdAccount = self
            .send_with(token, CallKind::WithToken, || {
                self.http
                    .get(url.clone())
                    .query(&[("fields", "account_status,name")])
            })
            .await?;
        a.account_status.ok_or_else(|| {
            GraphError::Transient(Transient::Network(
                "the ad account answer had no account_status".into(),
            ))
        })
    }

    /// Takes the Page token again from a long-lived user token of a person with a task on the
    /// Page: `GET /{page_id}?fields=access_token`, `Authorization: Bearer USER` with its proof.
    /// A Page token taken from a long-lived user token does not expire (`expires_at: 0`) but
    /// dies with that person's session. Meta may hand back the same string.
    ///
    /// # Errors
    /// [`GraphError::TokenDead`] when the user token is dead (only a new login helps),
    /// [`GraphError::Misconfigured`] when the person has no task on the Page, transient failures.
    pub async fn page_token_from_user(
        &self,
        user_token: &Secret,
        page_id: &str,
    ) -> Result<Secret, GraphError> {
        let url = self.url(&[page_id]);
        let p: wire::PageAccessToken = self
            .send_with(user_token, CallKind::WithToken, || {
                self.http
                    .get(url.clone())
                    .query(&[("fields", "access_token")])
            })
            .await?;
        new_token(p.access_token)
    }

    /// The reads that prove `token` works for WhatsApp, given what `debug_token` said: the
    /// WABA (only when configured and `info` lists no targets for the WhatsApp scopes, so
    /// the targets cannot decide) and the phone number (when configured). Nothing is read
    /// for a token Meta called invalid. [`crate::usable::decide`] judges the result.
    pub async fn prove(
        &self,
        token: &Secret,
        info: &TokenInfo,
        waba_id: Option<&str>,
        phone_number_id: Option<&str>,
    ) -> Proof {
        if info.invalid_reason().is_some() {
            return Proof::default();
        }
        let waba = match waba_id {
            Some(w) if info.waba_targets().is_none() => Some(self.read_waba(token, w).await),
            _ => None,
        };
        let phone = match phone_number_id {
            Some(p) => Some(self.phone_number(token, p).await),
            None => None,
        };
        Proof {
            waba,
            phone,
            ..Proof::default()
        }
    }

    /// Sends a text message from `phone_number_id` to `to` (the runbook's test send).
    /// Returns the message id.
    ///
    /// # Errors
    /// Classified [`GraphError`]; "recipient not allowed" and "template not found" are
    /// [`GraphError::Misconfigured`] with WhatsApp's codes 131030 and 132001.
    pub async fn send_text(
        &self,
        token: &Secret,
        phone_number_id: &str,
        to: &str,
        text: &str,
    ) -> Result<String, GraphError> {
        let body = serde_json::json!({
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
            "type": "text", "text": { "preview_url": false, "body": text }
        });
        self.send_message(token, phone_number_id, body).await
    }

    /// Sends a template message (for example `hello_world`, language `en_US`). Returns the id.
    ///
    /// # Errors
    /// As [`GraphClient::send_text`].
    pub async fn send_template(
        &self,
        token: &Secret,
        phone_number_id: &str,
        to: &str,
        template: &str,
        language: &str,
    ) -> Result<String, GraphError> {
        let body = serde_json::json!({
            "messaging_product": "whatsapp", "to": to, "type": "template",
            "template": { "name": template, "language": { "code": language } }
        });
        self.send_message(token, phone_number_id, body).await
    }

    /// The URL of `segments` on `kind`'s host: Meta's own host for that kind when the Graph
    /// base is Meta's, otherwise (a sandbox, a test server) the Graph base with the kind's
    /// path prefix (`/instagram`, `/threads`), which is how the sandbox serves them.
    fn kind_url(&self, kind: Kind, version: Option<&str>, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        let on_meta = self.base.host_str() == Some(crate::meta::kind::GRAPH_HOST);
        if on_meta {
            url = reqwest::Url::parse(&format!("https://{}/", kind.host())).expect("a host");
        }
        {
            let mut path = url.path_segments_mut().expect("http(s) base URL");
            path.pop_if_empty();
            if !on_meta {
                path.push(kind.word());
            }
            if let Some(v) = version {
                path.push(v);
            }
            for s in segments {
                path.push(s);
            }
        }
        url
    }

    /// The version prefix of `kind`'s reads: Graph's pinned one on Instagram (its reference
    /// shows `graph.instagram.com/v26.0/me`), `v1.0` on Threads (its only version).
    fn kind_version(&self, kind: Kind) -> String {
        match kind {
            Kind::Threads => "v1.0".to_string(),
            _ => self.version.to_string(),
        }
    }

    /// The cheap read that proves a token of `kind` works: `GET /me?fields=...` on the kind's
    /// host (Instagram: `user_id,username`; Threads: `id,username`), the token in the
    /// `access_token` query parameter as the pages show (no request URL is ever logged).
    ///
    /// # Errors
    /// Classified [`GraphError`]: code 190 is a dead (or wrong-host) token.
    pub async fn kind_me(&self, kind: Kind, token: &Secret) -> Result<KindAccount, GraphError> {
        let Some(fields) = kind.me_fields() else {
            return Err(GraphError::Misconfigured(local_error(
                "a whatsapp token is proven by its phone and WABA reads, not by /me",
            )));
        };
        let url = self.kind_url(kind, Some(&self.kind_version(kind)), &["me"]);
        let me: wire::KindMe = self
            .send(CallKind::WithToken, || {
                self.http
                    .get(url.clone())
                    .query(&[("fields", fields), ("access_token", token.expose())])
            })
            .await?;
        Ok(KindAccount {
            id: me.user_id.or(me.id).unwrap_or_default(),
            username: me.username,
        })
    }

    /// Renews a long-lived Instagram or Threads token: `GET /refresh_access_token` with the
    /// kind's `grant_type` (`ig_refresh_token`, `th_refresh_token`) and the token, on the
    /// kind's host, unversioned as the pages show. Meta answers only for a token at least 24
    /// hours old that has not expired; the new token lives 60 days (`expires_in`), and the old
    /// one until its own expiry (there is no revoke). Sent once, as [`GraphClient::refresh_token`].
    ///
    /// # Errors
    /// [`GraphError::TokenDead`] when the token expired or was invalidated (only a new login
    /// helps), [`GraphError::Misconfigured`] when Meta refuses the call, transient failures.
    pub async fn refresh_kind(&self, kind: Kind, token: &Secret) -> Result<Refreshed, GraphError> {
        let Some(grant) = kind.refresh_grant() else {
            return self.refresh_token(token).await;
        };
        let url = self.kind_url(kind, None, &["refresh_access_token"]);
        let parsed: wire::RefreshResponse = self
            .send_json(CallKind::WithToken, Replay::IfNotActedOn, || {
                self.http
                    .get(url.clone())
                    .query(&[("grant_type", grant), ("access_token", token.expose())])
            })
            .await?;
        refreshed(parsed)
    }

    /// Exchanges a short-lived (one hour) Instagram or Threads token for a long-lived one:
    /// `GET /access_token?grant_type=ig_exchange_token|th_exchange_token&client_secret=S&access_token=T`
    /// on the kind's host, unversioned, `S` the product app's own secret (not the Meta app's).
    /// Answer as a refresh (`expires_in` about 60 days). Sent once, as a refresh.
    ///
    /// # Errors
    /// [`GraphError::OwnCredentials`] when Meta refuses the app secret, [`GraphError::TokenDead`]
    /// for an expired or unknown token, [`GraphError::Misconfigured`] when Meta refuses the
    /// exchange (a token that is not short-lived), transient failures.
    pub async fn exchange_kind(
        &self,
        kind: Kind,
        app_secret: &Secret,
        token: &Secret,
    ) -> Result<Refreshed, GraphError> {
        let Some(grant) = kind.exchange_grant() else {
            return Err(GraphError::Misconfigured(local_error(
                "a whatsapp token has no short-lived exchange here",
            )));
        };
        let url = self.kind_url(kind, None, &["access_token"]);
        let parsed: wire::RefreshResponse = self
            .send_json(CallKind::WithAppSecret, Replay::IfNotActedOn, || {
                self.http.get(url.clone()).query(&[
                    ("grant_type", grant),
                    ("client_secret", app_secret.expose()),
                    ("access_token", token.expose()),
                ])
            })
            .await?;
        refreshed(parsed)
    }

    /// Checks a product app's own id and secret (the `app` of an Instagram or Threads token)
    /// without any token: on Threads, `GET /oauth/access_token?client_id=A&client_secret=S&
    /// grant_type=client_credentials` on graph.threads.net ("Threads API": *App Access
    /// Tokens*), whose answer, the app access token `TH|A|...`, is put in a [`Secret`] and
    /// dropped at once: it is neither kept nor logged. Cheap and without side effects at Meta
    /// beyond that token, so it may run on every check; idempotent, so transient failures are
    /// retried. For Instagram (and the Graph kinds, whose app is `[meta]`'s) Meta offers no
    /// such call: [`AppCheck::NotCheckable`], and nothing is sent.
    ///
    /// The secret travels in the query string as Meta documents, so, as for every call here,
    /// the request URL is never logged nor put into an error, and any echo of the secret in
    /// Meta's answer is scrubbed.
    ///
    /// # Errors
    /// [`GraphError::OwnCredentials`] when Meta refuses the app: a wrong or reset secret (code
    /// 1, "Error validating client secret") or an unknown app id (code 101); transient failures;
    /// [`GraphError::Misconfigured`] for anything else Meta refuses.
    pub async fn check_kind_app(
        &self,
        kind: Kind,
        app_id: &str,
        app_secret: &Secret,
    ) -> Result<AppCheck, GraphError> {
        if kind != Kind::Threads {
            return Ok(AppCheck::NotCheckable);
        }
        let url = self.kind_url(kind, None, &["oauth", "access_token"]);
        self.send_parsed(
            CallKind::WithAppSecret,
            Replay::Always,
            || {
                self.http.get(url.clone()).query(&[
                    ("client_id", app_id),
                    ("client_secret", app_secret.expose()),
                    ("grant_type", "client_credentials"),
                ])
            },
            |status, _headers, body| {
                let parsed: wire::AppTokenResponse = serde_json::from_slice(body)
                    .map_err(|_| GraphError::Transient(error::bad_body(status, body)))?;
                // The app token is a credential: into a `Secret` (zeroed on drop), then gone.
                let token = Secret::new(parsed.access_token);
                if token.is_empty() {
                    return Err(GraphError::Transient(Transient::BadBody {
                        status,
                        what: "an answer without an app access token",
                    }));
                }
                drop(token);
                Ok(AppCheck::Accepted)
            },
        )
        .await
    }

    /// Refreshes an expiring token: `GET oauth/access_token` with
    /// `grant_type=fb_exchange_token` and `set_token_expires_in_60_days=true`, authenticated by
    /// the app id and secret. The new token lasts 60 days from now; `token` keeps working
    /// until its own expiry (Meta's zero-downtime recipe: refresh, deploy the new token
    /// everywhere, then [`GraphClient::revoke_token`] the old one).
    ///
    /// The client does not refuse a never-expiring token: Meta (and the sandbox) trade it for
    /// a 60-day one. A caller that holds a non-expiring token (`debug_token` says
    /// [`Expiry::Never`]) must not refresh it.
    ///
    /// Sent once: each refresh makes a new token, so a timeout, a 5xx or a cut-short answer is
    /// returned as [`GraphError::Transient`] rather than sent again (it may have made a token
    /// that nobody will see; harmless, as it expires unused). Only a failed connection or a
    /// rate limit is retried.
    ///
    /// # Errors
    /// [`GraphError::OwnCredentials`] when Meta refuses the app secret ("Error validating
    /// client secret", code 1), [`GraphError::TokenDead`] when `token` is expired, revoked or
    /// unknown (an expired token cannot be refreshed, only replaced),
    /// [`GraphError::Misconfigured`] for a token of another app, [`GraphError::Transient`].
    pub async fn refresh_token(&self, token: &Secret) -> Result<Refreshed, GraphError> {
        let url = self.url(&["oauth", "access_token"]);
        let parsed: wire::RefreshResponse = self
            .send_json(CallKind::WithAppSecret, Replay::IfNotActedOn, || {
                self.http.get(url.clone()).query(&[
                    ("grant_type", "fb_exchange_token"),
                    ("client_id", self.app.app_id.as_str()),
                    ("client_secret", self.app.app_secret.expose()),
                    ("set_token_expires_in_60_days", "true"),
                    ("fb_exchange_token", token.expose()),
                ])
            })
            .await?;
        refreshed(parsed)
    }

    /// Makes a new system-user token: `POST /{system_user_id}/access_tokens` for this app with
    /// `scopes` (both WhatsApp scopes when empty), authenticated by `admin_token` (an admin
    /// system user's token of the same business, sent as `Authorization: Bearer` with its
    /// `appsecret_proof`).
    /// `expiring` asks for a 60-day token, otherwise a non-expiring one. Meta answers with the
    /// token only: inspect it with [`GraphClient::debug_token`] for its expiry and assets.
    ///
    /// Sent once: minting is not idempotent at Meta, so a request that may have reached Meta
    /// (a timeout, a 5xx, a cut-short answer) is never sent again; a second attempt could
    /// leave a second live token nobody knows about. The error is
    /// [`GraphError::Transient`]; the rotation has recorded its intent and decides what to do.
    /// Only a failed connection or a rate limit, which Meta refuses before doing anything, is
    /// retried.
    ///
    /// # Errors
    /// [`GraphError::Misconfigured`] for an empty or unknown system-user id, an app not
    /// installed for the system user (Meta's user title and message are kept), a wrong proof or
    /// an admin token without the right; [`GraphError::TokenDead`] when `admin_token` is dead
    /// (the error is about the admin token, not a managed one); [`GraphError::Transient`].
    pub async fn mint_token(
        &self,
        admin_token: &Secret,
        system_user_id: &str,
        expiring: bool,
        scopes: &[String],
    ) -> Result<Secret, GraphError> {
        // An empty id would post to `/access_tokens` of nothing: refuse it here.
        if system_user_id.is_empty() {
            return Err(GraphError::Misconfigured(local_error(
                "the system-user id is empty",
            )));
        }
        let url = self.url(&[system_user_id, "access_tokens"]);
        let proof = appsecret_proof(&self.app.app_secret, admin_token.expose());
        let scope = if scopes.is_empty() {
            WHATSAPP_SCOPES.join(",")
        } else {
            scopes.join(",")
        };
        let sixty_days = if expiring { "true" } else { "false" };
        let parsed: wire::MintResponse = self
            .send_json(CallKind::WithToken, Replay::IfNotActedOn, || {
                self.http
                    .post(url.clone())
                    .header(AUTHORIZATION, format!("Bearer {}", admin_token.expose()))
                    .form(&[
                        ("business_app", self.app.app_id.as_str()),
                        ("scope", scope.as_str()),
                        ("appsecret_proof", proof.as_str()),
                        ("set_token_expires_in_60_days", sixty_days),
                    ])
            })
            .await?;
        new_token(parsed.access_token)
    }

    /// Revokes `old` at once: `GET oauth/revoke` with the app id and secret, called with
    /// `caller` (`old` itself, or an admin or system-user token of the business). Revoking is
    /// idempotent, so transient failures are retried; revoking a token that is already revoked
    /// or expired succeeds, as long as `caller` works.
    ///
    /// Meta's documented answer, `{"success":"true",}`, is not valid JSON: it is read leniently.
    ///
    /// # Errors
    /// [`GraphError::OwnCredentials`] when Meta refuses the app secret;
    /// [`GraphError::TokenDead`] when Meta answers code 190, which may be about `caller` (dead)
    /// or about `old` (unknown, unparseable): the envelope does not say which, so this is not
    /// taken to mean that `old` is already gone; inspect both with
    /// [`GraphClient::debug_token`]. [`GraphError::Transient`] when Graph could not answer,
    /// or answered `"success": false` (the token is still live; try again later).
    pub async fn revoke_token(&self, old: &Secret, caller: &Secret) -> Result<(), GraphError> {
        let url = self.url(&["oauth", "revoke"]);
        // "Require App Secret" refuses any call made with a user or system-user token that
        // lacks its proof (code 100), revoke included: without it the old token stays alive.
        let proof = appsecret_proof(&self.app.app_secret, caller.expose());
        self.send_parsed(
            CallKind::WithAppSecret,
            Replay::Always,
            || {
                self.http.get(url.clone()).query(&[
                    ("client_id", self.app.app_id.as_str()),
                    ("client_secret", self.app.app_secret.expose()),
                    ("revoke_token", old.expose()),
                    ("access_token", caller.expose()),
                    ("appsecret_proof", proof.as_str()),
                ])
            },
            |status, _headers, body| match revoke_outcome(body) {
                Some(true) => Ok(()),
                Some(false) => Err(GraphError::Transient(Transient::Api(ApiError {
                    status,
                    code: -1,
                    subcode: None,
                    kind: None,
                    message: "Meta answered the revoke with \"success\": false".into(),
                    details: None,
                    fbtrace_id: None,
                }))),
                None => Err(GraphError::Transient(error::bad_body(status, body))),
            },
        )
        .await
    }

    async fn send_message(
        &self,
        token: &Secret,
        phone_number_id: &str,
        body: serde_json::Value,
    ) -> Result<String, GraphError> {
        let url = self.url(&[phone_number_id, "messages"]);
        let parsed: wire::MessageResponse = self
            .send_with(token, CallKind::WithToken, || {
                self.http.post(url.clone()).json(&body)
            })
            .await?;
        parsed
            .messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or(GraphError::Transient(Transient::BadBody {
                status: 200,
                what: "a reply without a message id",
            }))
    }

    /// Sends a request authenticated with `token` and its `appsecret_proof`.
    async fn send_with<T: serde::de::DeserializeOwned>(
        &self,
        token: &Secret,
        call: CallKind,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, GraphError> {
        let proof = appsecret_proof(&self.app.app_secret, token.expose());
        self.send(call, || {
            build()
                .query(&[("appsecret_proof", proof.as_str())])
                .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        })
        .await
    }

    /// Sends with retries and parses a 2xx answer as `T`. A 2xx body that does not parse (a
    /// proxy cut it short) is transient and retried like a 5xx.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: CallKind,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, GraphError> {
        self.send_json(call, Replay::Always, build).await
    }

    /// [`GraphClient::send`] with a choice of [`Replay`].
    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        call: CallKind,
        replay: Replay,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, GraphError> {
        self.send_parsed(call, replay, build, |status, _headers, body| {
            serde_json::from_slice(body)
                .map_err(|_| GraphError::Transient(error::bad_body(status, body)))
        })
        .await
    }

    /// Sends, retrying transient failures as `replay` allows, and hands a 2xx answer's status
    /// and body to `parse`. An error from `parse` is treated like any other: retried when
    /// transient.
    async fn send_parsed<T>(
        &self,
        call: CallKind,
        replay: Replay,
        build: impl Fn() -> reqwest::RequestBuilder,
        parse: impl Fn(u16, &HeaderMap, &[u8]) -> Result<T, GraphError>,
    ) -> Result<T, GraphError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = build().build().map_err(transport_error)?;
            // The configured base URL was checked, but the rule is about what is sent.
            if !sendable(request.url()) {
                return Err(GraphError::Misconfigured(local_error(
                    "refusing to send a Graph request over plain http to a host other than loopback",
                )));
            }
            let scrubber = request_secrets(&request, &self.app.app_secret);
            // True only when the request cannot have reached Meta.
            let mut unsent = false;
            let err = match self.http.execute(request).await {
                Err(e) => {
                    unsent = e.is_connect();
                    transport_error(e)
                }
                Ok(resp) => match receive(call, resp, &scrubber).await {
                    Received::Answer {
                        status,
                        headers,
                        body,
                    } => match parse(status, &headers, &body) {
                        Ok(parsed) => return Ok(parsed),
                        Err(e) => e,
                    },
                    Received::Failed(e) => e,
                },
            };
            let err = scrub_error(err, &scrubber);
            let GraphError::Transient(t) = &err else {
                return Err(err);
            };
            let may_replay = match replay {
                Replay::Always => true,
                Replay::IfNotActedOn => unsent || matches!(t, Transient::RateLimited { .. }),
            };
            if !may_replay || attempt >= self.retry.attempts {
                return Err(err);
            }
            let mut delay = backoff(self.retry.base_delay, attempt);
            if let Transient::RateLimited {
                retry_after: Some(wait),
                ..
            } = t
            {
                if *wait > MAX_RATE_LIMIT_WAIT {
                    // Sitting it out would hold up the caller (the daemon's loop) for as long;
                    // the caller tries again on its next run, and the error carries the wait.
                    tracing::debug!(wait_s = wait.as_secs(), error = %err, "rate limited for longer than one call waits; giving up for now");
                    return Err(err);
                }
                delay = delay.max(*wait);
            }
            tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %err, "transient Graph failure, retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Longest Graph answer read. Meta's largest answers (a batch of 50 `debug_token`s, a page of
/// phone numbers) are tens of kilobytes; a body beyond this is not Graph talking, and reading
/// it would let whoever sent it fill the daemon's memory.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The query and form parameters of Graph requests that hold a token or the app secret.
const SECRET_PARAMS: [&str; 5] = [
    "input_token",
    "access_token",
    "client_secret",
    "fb_exchange_token",
    "revoke_token",
];

/// Whether a request to `url` may be sent: https, or plain http to loopback (a sandbox).
fn sendable(url: &reqwest::Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && crate::config::is_loopback(url))
}

/// The `[meta] proxy` for every Graph request but those to loopback, which never go through a
/// proxy (a sandbox, a local test).
fn graph_proxy(url: &reqwest::Url) -> Result<reqwest::Proxy, GraphError> {
    let proxy = reqwest::Proxy::all(url.clone()).map_err(|e| {
        GraphError::Misconfigured(local_error(&format!(
            "meta.proxy: {}",
            error_chain(e.without_url())
        )))
    })?;
    Ok(proxy.no_proxy(reqwest::NoProxy::from_string("localhost,127.0.0.0/8,::1")))
}

/// Every secret `request` carries, for [`crate::scrub`]: the app secret, the `Authorization`
/// credential, and the [`SECRET_PARAMS`] of its query and form body (a batch's items
/// included, whose `relative_url`s carry `input_token`).
fn request_secrets(request: &reqwest::Request, app_secret: &Secret) -> crate::scrub::Scrubber {
    let mut scrubber = crate::scrub::Scrubber::new();
    scrubber.add(app_secret.expose());
    if let Some(auth) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        scrubber.add(
            auth.split_once(' ')
                .map_or(auth, |(_, credential)| credential),
        );
    }
    fn params(scrubber: &mut crate::scrub::Scrubber, pairs: &[u8]) {
        for (k, v) in url::form_urlencoded::parse(pairs) {
            if SECRET_PARAMS.contains(&k.as_ref()) {
                scrubber.add(&v);
            } else if k == "batch"
                && let Ok(items) = serde_json::from_str::<Vec<serde_json::Value>>(&v)
            {
                for item in &items {
                    for field in ["relative_url", "body"] {
                        if let Some(text) = item.get(field).and_then(|u| u.as_str()) {
                            let query = text.split_once('?').map_or(text, |(_, q)| q);
                            params(scrubber, query.as_bytes());
                        }
                    }
                }
            }
        }
    }
    if let Some(query) = request.url().query() {
        params(&mut scrubber, query.as_bytes());
    }
    if let Some(body) = request.body().and_then(reqwest::Body::as_bytes) {
        params(&mut scrubber, body);
    }
    scrubber
}

/// A response, read.
enum Received {
    /// A 2xx answer, its body read in full (and scrubbed, but for the `oauth/*` calls).
    Answer {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    /// Anything else, classified.
    Failed(GraphError),
}

/// Reads a response: a 3xx is an error naming where it pointed (host only, never followed),
/// a body is read up to [`MAX_BODY`], and every secret the request carried is taken out of
/// the body before anything reads it, so Graph's error text (which may echo
/// `input_token=...` or the `Authorization` header) reaches no message, state or email.
///
/// A 2xx answer to an `oauth/*` call ([`CallKind::WithAppSecret`]) is not scrubbed: a
/// refresh may answer with the very token it was given, and no text of those answers is
/// kept (the token, or revoke's `success`).
async fn receive(
    call: CallKind,
    resp: reqwest::Response,
    scrubber: &crate::scrub::Scrubber,
) -> Received {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if resp.status().is_redirection() {
        let host = location_host(resp.url(), &headers);
        return Received::Failed(GraphError::Transient(Transient::Redirected {
            status,
            host: scrubber.scrub(&host),
        }));
    }
    let body = match read_capped(resp, MAX_BODY).await {
        Ok(body) => body,
        Err(Capped::Transport(e)) => return Received::Failed(transport_error(e)),
        Err(Capped::TooLarge) => {
            return Received::Failed(GraphError::Transient(Transient::TooLarge {
                status,
                limit: MAX_BODY,
            }));
        }
    };
    if (200..300).contains(&status) {
        let body = if call == CallKind::WithAppSecret {
            body
        } else {
            scrubber.scrub_bytes(&body)
        };
        Received::Answer {
            status,
            headers,
            body,
        }
    } else {
        let body = scrubber.scrub_bytes(&body);
        Received::Failed(classify(call, status, &body, retry_after(&headers)))
    }
}

/// The host a redirect's `Location` names (resolved against the request's URL), never its
/// path or query, which may carry a secret of the redirecting server's choosing.
pub(crate) fn location_host(base: &reqwest::Url, headers: &HeaderMap) -> String {
    headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| base.join(l).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "(no readable Location)".to_string())
}

/// Why a body was not read to its end.
pub enum Capped {
    /// The connection failed or timed out.
    Transport(reqwest::Error),
    /// It grew past the cap.
    TooLarge,
}

/// Reads `resp`'s body a chunk at a time and stops as soon as it passes `cap` bytes: a
/// `Content-Length` above the cap is refused before reading, and an endless chunked body
/// costs at most `cap` bytes of memory.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Capped> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Capped::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Capped::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(Capped::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `err` with every known secret taken out of the text that came from outside (Meta's
/// message, user title and message, details, trace id; a transport error's words).
fn scrub_error(err: GraphError, scrubber: &crate::scrub::Scrubber) -> GraphError {
    let api = |mut a: ApiError| {
        a.message = scrubber.scrub(&a.message);
        a.details = a.details.map(|d| scrubber.scrub(&d));
        a.fbtrace_id = a.fbtrace_id.map(|t| scrubber.scrub(&t));
        a.kind = a.kind.map(|k| scrubber.scrub(&k));
        a
    };
    match err {
        GraphError::TokenDead(a) => GraphError::TokenDead(api(a)),
        GraphError::Misconfigured(a) => GraphError::Misconfigured(api(a)),
        GraphError::OwnCredentials(a) => GraphError::OwnCredentials(api(a)),
        GraphError::Transient(t) => GraphError::Transient(match t {
            Transient::Network(text) => Transient::Network(scrubber.scrub(&text)),
            Transient::RateLimited {
                api: a,
                retry_after,
            } => Transient::RateLimited {
                api: api(a),
                retry_after,
            },
            Transient::Api(a) => Transient::Api(api(a)),
            other => other,
        }),
    }
}

/// A reqwest failure as a transient error. `without_url`: the URL may carry `input_token`,
/// `client_secret` or `fb_exchange_token`.
fn transport_error(e: reqwest::Error) -> GraphError {
    if e.is_timeout() {
        GraphError::Transient(Transient::Timeout)
    } else {
        GraphError::Transient(Transient::Network(error_chain(e.without_url())))
    }
}

/// A refresh's or exchange's answer: the new token, and its lifetime when Meta gave a
/// positive `expires_in`.
fn refreshed(parsed: wire::RefreshResponse) -> Result<Refreshed, GraphError> {
    Ok(Refreshed {
        token: new_token(parsed.access_token)?,
        expires_in: parsed
            .expires_in
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64)),
    })
}

/// A token Meta just made; an empty one is a broken answer, never a token.
fn new_token(value: String) -> Result<Secret, GraphError> {
    if value.is_empty() {
        return Err(GraphError::Transient(Transient::BadBody {
            status: 200,
            what: "an empty access token",
        }));
    }
    Ok(Secret::new(value))
}

/// Reads `oauth/revoke`'s answer leniently: Meta documents `{"success":"true",}`, with a string
/// and a trailing comma. `Some(true)` for `true` or `"true"`, `Some(false)` for `false` or
/// `"false"`, `None` for anything else (not an answer to trust).
fn revoke_outcome(body: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let parsed: wire::RevokeResponse = serde_json::from_str(text).ok().or_else(|| {
        // Drop one trailing comma before the closing brace, and try again.
        let inner = text.strip_suffix('}')?.trim_end().strip_suffix(',')?;
        serde_json::from_str(&format!("{inner}}}")).ok()
    })?;
    match parsed.success? {
        serde_json::Value::Bool(b) => Some(b),
        serde_json::Value::String(s) => match s.trim() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A reqwest error with its causes, for a message (strip the URL first: it may carry a
/// secret). Shared with the webhook target.
pub fn error_chain(e: reqwest::Error) -> String {
    use std::error::Error;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn local_error(message: &str) -> ApiError {
    ApiError {
        status: 0,
        code: 100,
        subcode: None,
        kind: None,
        message: message.to_string(),
        details: None,
        fbtrace_id: None,
    }
}

/// Exponential backoff with "equal jitter": half fixed, half random, so many instances that
/// failed together do not retry together.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (attempt.max(1) - 1).min(16))
        .min(Duration::from_secs(30));
    let half = exp / 2;
    half + half.mul_f64(jitter())
}

fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How long Meta asked to wait: `Retry-After` seconds, or the largest
/// `estimated_time_to_regain_access` (minutes) in `X-Business-Use-Case-Usage`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(secs) = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(secs));
    }
    let buc = headers.get("x-business-use-case-usage")?.to_str().ok()?;
    let v: serde_json::Value = serde_json::from_str(buc).ok()?;
    let minutes = v
        .as_object()?
        .values()
        .filter_map(|entries| entries.as_array())
        .flatten()
        .filter_map(|e| {
            e.get("estimated_time_to_regain_access")
                .and_then(error::loose_i64)
        })
        .max()?;
    Some(Duration::from_secs(minutes.max(0) as u64 * 60))
}

fn timestamp(secs: Option<i64>) -> Option<Timestamp> {
    secs.filter(|s| *s > 0)
        .and_then(|s| Timestamp::from_second(s).ok())
}

fn token_info(d: wire::DebugTokenData) -> TokenInfo {
    let expires_at = match d.expires_at {
        Some(0) => Expiry::Never,
        Some(s) => timestamp(Some(s)).map_or(Expiry::Unknown, Expiry::At),
        None => Expiry::Unknown,
    };
    let error = d.error.map(|e| ApiError {
        status: 200,
        code: e.code.unwrap_or(190),
        subcode: e.subcode,
        kind: None,
        message: e.message,
        details: None,
        fbtrace_id: None,
    });
    TokenInfo {
        is_valid: d.is_valid,
        app_id: d.app_id,
        token_type: d.kind,
        application: d.application,
        expires_at,
        data_access_expires_at: timestamp(d.data_access_expires_at),
        issued_at: timestamp(d.issued_at),
        scopes: d.scopes,
        granular_scopes: d
            .granular_scopes
            .into_iter()
            .map(|g| GranularScope {
                scope: g.scope,
                target_ids: g.target_ids,
            })
            .collect(),
        user_id: d.user_id,
        profile_id: d.profile_id,
        error,
    }
}

fn phone(p: wire::PhoneNumberWire) -> PhoneNumber {
    PhoneNumber {
        id: p.id,
        display_phone_number: p.display_phone_number,
        verified_name: p.verified_name,
        quality_rating: p.quality_rating,
        code_verification_status: p.code_verification_status,
        name_status: p.name_status,
    }
}

/// Runs `body`, as if it came with HTTP `status`, through every parser a Graph answer goes
/// through, and checks what the classification promises. For the fuzz targets and their
/// corpus replay (`tokenwarden::fuzzing`); not an API.
///
/// The parsers: `debug_token`'s answer (and every question asked of the resulting
/// [`TokenInfo`]), the error envelope classified for each [`CallKind`], a phone number and a
/// page of them, a message id, refresh and mint answers, the lenient revoke answer, and the
/// body read as an `X-Business-Use-Case-Usage` header. Never panicking is the property; the
/// assertions are the invariants of `ARCHITECTURE.md` that a body alone can decide.
#[doc(hidden)]
pub fn fuzz_parse(status: u16, body: &[u8]) {
    use std::fmt::Write as _;
    // Formatting exercises `Display` and `dead_reason`; the text is thrown away.
    let mut sink = String::new();

    if let Ok(parsed) = serde_json::from_slice::<wire::DebugTokenResponse>(body) {
        let info = token_info(parsed.data);
        if let Some(reason) = info.invalid_reason() {
            let _ = write!(sink, "{reason} {}", dead_reason(&reason));
        }
        assert_eq!(
            info.invalid_reason().is_none(),
            info.valid() || info.validity_unknown()
        );
        let _ = info.missing_whatsapp_scopes();
        let wabas = info.waba_ids();
        assert!(
            wabas.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        for waba in &wabas {
            let _ = info.targets_waba(waba);
        }
    }

    let parsed = error::parse_error_body(status, body);
    for call in [
        CallKind::Inspect,
        CallKind::WithToken,
        CallKind::WithAppSecret,
    ] {
        let retry = Some(Duration::from_secs(u64::from(status)));
        let classified = classify(call, status, body, retry);
        let _ = write!(sink, "{classified}");
        match (&parsed, &classified) {
            // A body that is not Graph JSON is transient, never a verdict.
            (Err(_), GraphError::Transient(Transient::BadBody { .. })) => {}
            (Err(_), other) => panic!("a non-envelope body was classified {other:?}"),
            (Ok(_), GraphError::Transient(Transient::BadBody { .. })) => {
                panic!("an envelope was classified as a bad body")
            }
            (Ok(_), _) => {}
        }
        if let GraphError::TokenDead(api) = &classified {
            // An error about the inspecting call is never reported as a dead token.
            assert_ne!(call, CallKind::Inspect, "{api:?}");
            assert!(matches!(api.code, 0 | 102 | 190), "{api:?}");
        }
        if let GraphError::Transient(Transient::RateLimited { retry_after, .. }) = &classified {
            assert_eq!(*retry_after, retry);
        }
    }

    if let Ok(p) = serde_json::from_slice::<wire::PhoneNumberWire>(body) {
        let _ = write!(sink, "{:?}", phone(p));
    }
    if let Ok(page) = serde_json::from_slice::<wire::PhoneNumberPage>(body) {
        let numbers: Vec<PhoneNumber> = page.data.into_iter().map(phone).collect();
        let after = page.paging.and_then(|p| p.cursors).and_then(|c| c.after);
        let _ = write!(sink, "{numbers:?} {after:?}");
    }
    if let Ok(m) = serde_json::from_slice::<wire::MessageResponse>(body) {
        let _ = m.messages.into_iter().next().map(|m| m.id);
    }
    if let Ok(r) = serde_json::from_slice::<wire::RefreshResponse>(body) {
        let _ = new_token(r.access_token);
        let _ = r
            .expires_in
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64));
    }
    if let Ok(m) = serde_json::from_slice::<wire::MintResponse>(body)
        && let Err(e) = new_token(m.access_token)
    {
        let _ = write!(sink, "{e}");
    }
    let outcome = revoke_outcome(body);
    if let Ok(strict) = serde_json::from_slice::<serde_json::Value>(body) {
        // What strict JSON says, the lenient reading says too.
        // The lenient reading of `oauth/revoke` never contradicts a strict one (it may still
        // distrust an odd answer, such as one with the key twice).
        if let Some(serde_json::Value::Bool(b)) = strict.get("success") {
            assert!(outcome.is_none() || outcome == Some(*b), "{outcome:?}");
        }
    }

    if let Ok(value) = reqwest::header::HeaderValue::from_bytes(body) {
        let mut headers = HeaderMap::new();
        headers.insert("x-business-use-case-usage", value.clone());
        let _ = retry_after(&headers);
        headers.insert("retry-after", value);
        let _ = retry_after(&headers);
    }
    std::hint::black_box(sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_at(base: &str) -> GraphClient {
        let meta = MetaConfig {
            app_id: "1".into(),
            app_secret: crate::config::SecretRef::Env("UNUSED".into()),
            api_version: "v25.0".parse().unwrap(),
            base_url: base.parse().unwrap(),
            timeout: Duration::from_secs(5),
            attempts: 1,
            retry_delay: Duration::from_millis(5),
            proxy: None,
        };
        GraphClient::new(&meta, Secret::new("s")).unwrap()
    }

    /// Threads' app access token is asked of Threads' own host on Meta, unversioned as the page
    /// shows, and under `/threads` on a sandbox.
    #[test]
    fn the_threads_app_check_goes_to_the_threads_host() {
        let on_meta = client_at("https://graph.facebook.com/");
        let url = on_meta.kind_url(Kind::Threads, None, &["oauth", "access_token"]);
        assert_eq!(url.as_str(), "https://graph.threads.net/oauth/access_token");
        let local = client_at("http://127.0.0.1:9/");
        let url = local.kind_url(Kind::Threads, None, &["oauth", "access_token"]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/threads/oauth/access_token"
        );
    }

    #[test]
    fn only_https_or_loopback_http_is_sent() {
        for (url, ok) in [
            ("https://graph.facebook.com/v25.0/debug_token", true),
            ("http://127.0.0.1:8080/v25.0/x", true),
            ("http://localhost/v25.0/x", true),
            ("http://[::1]:9/x", true),
            ("http://graph.facebook.com/v25.0/debug_token", false),
            ("http://10.0.0.1/x", false),
            ("ftp://127.0.0.1/x", false),
        ] {
            assert_eq!(sendable(&url.parse().unwrap()), ok, "{url}");
        }
    }

    #[test]
    fn a_request_carries_its_secrets_to_the_scrubber() {
        let http = reqwest::Client::new();
        let app_secret = Secret::new("a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37");
        let batch =
            r#"[{"method":"GET","relative_url":"debug_token?input_token=EAAGbatchitemtoken1"}]"#;
        let req = http
            .post("https://graph.facebook.com/v25.0/")
            .query(&[("input_token", "EAAGquerytoken1"), ("fields", "id,name")])
            .header(AUTHORIZATION, "Bearer EAAGheadertoken1")
            .form(&[("batch", batch), ("client_secret", "formsecret1")])
            .build()
            .unwrap();
        let s = request_secrets(&req, &app_secret);
        for secret in [
            "a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37",
            "EAAGbatchitemtoken1",
            "EAAGquerytoken1",
            "EAAGheadertoken1",
            "formsecret1",
        ] {
            assert!(s.finds(secret.as_bytes()), "{secret}");
        }
        // Parameters that are not secrets stay readable.
        assert_eq!(s.scrub("fields id,name"), "fields id,name");
    }

    #[test]
    fn backoff_grows_and_stays_within_bounds() {
        let base = Duration::from_millis(100);
        for attempt in 1..20 {
            let d = backoff(base, attempt);
            let cap = base
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(Duration::from_secs(30));
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn retry_after_reads_both_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("x-business-use-case-usage", r#"{"102290129340398":[{"type":"whatsapp","call_count":100,"estimated_time_to_regain_access":3}]}"#.parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(180)));
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn revoke_answers_parse_leniently() {
        assert_eq!(revoke_outcome(br#"{"success":"true",}"#), Some(true));
        assert_eq!(revoke_outcome(b"{\"success\": \"true\" , }\n"), Some(true));
        assert_eq!(revoke_outcome(br#"{"success":true}"#), Some(true));
        assert_eq!(revoke_outcome(br#"{"success":false}"#), Some(false));
        assert_eq!(revoke_outcome(br#"{"success":"false",}"#), Some(false));
        for garbage in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            br#"{"success""#,
            br#"{"success":"yes"}"#,
            br#"{"success":1}"#,
            br#"{"ok":true}"#,
            br#"{"success":true,,}"#,
            br#"[{"success":true}]"#,
            b"\xff\xfe",
        ] {
            assert_eq!(revoke_outcome(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn debug_token_shapes_parse() {
        let su = br#"{"data":{"app_id":"634974688087057","type":"SYSTEM_USER","application":"Lucky Shrub",
 "data_access_expires_at":0,"expires_at":0,"is_valid":true,"issued_at":1712099387,
 "scopes":["whatsapp_business_management","whatsapp_business_messaging"],
 "granular_scopes":[{"scope":"whatsapp_business_management","target_ids":["102290129340398","5"]},
                    {"scope":"whatsapp_business_messaging","target_ids":[5, "102290129340398"]}],
 "user_id":104169029247128}}"#;
        let info = token_info(
            serde_json::from_slice::<wire::DebugTokenResponse>(su)
                .unwrap()
                .data,
        );
        assert!(info.valid());
        assert_eq!(info.expires_at, Expiry::Never);
        assert_eq!(info.data_access_expires_at, None);
        assert!(info.missing_whatsapp_scopes().is_empty());
        assert!(info.targets_waba("102290129340398"));
        assert!(!info.targets_waba("999"));
        assert_eq!(
            info.waba_ids(),
            vec!["102290129340398".to_string(), "5".to_string()]
        );
        assert_eq!(info.user_id.as_deref(), Some("104169029247128"));

        let expired = br#"{"data":{"app_id":"257422819769992","type":"USER","application":"demo","data_access_expires_at":1671205551,
 "error":{"code":190,"message":"Error validating access token: Session has expired on Wednesday, 16-Nov-22 07:45:51 PST. The current time is Thursday, 17-Nov-22 21:30:03 PST.","subcode":463},
 "expires_at":1668613551,"is_valid":false,"issued_at":1663429551,"scopes":["email"],"user_id":"123"}}"#;
        let info = token_info(
            serde_json::from_slice::<wire::DebugTokenResponse>(expired)
                .unwrap()
                .data,
        );
        assert!(!info.valid());
        assert_eq!(
            info.error.as_ref().map(|e| (e.code, e.subcode)),
            Some((190, Some(463)))
        );
        assert_eq!(
            info.expires_at,
            Expiry::At(Timestamp::from_second(1668613551).unwrap())
        );
        assert_eq!(info.missing_whatsapp_scopes().len(), 2);

        let garbage = br#"{"data":{"error":{"code":190,"message":"The access token could not be decrypted"},"is_valid":false,"scopes":[]}}"#;
        let info = token_info(
            serde_json::from_slice::<wire::DebugTokenResponse>(garbage)
                .unwrap()
                .data,
        );
        assert_eq!(info.app_id, None);
        assert_eq!(info.expires_at, Expiry::Unknown);
    }
}
