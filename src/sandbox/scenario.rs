//! The world a sandbox simulates: apps, WhatsApp Business Accounts, phone numbers, system users,
//! templates, predefined tokens, pending faults and quirks, plus the shape used to ask for new
//! tokens ([`TokenSpec`]). What a failure is ([`Fault`]) is defined in `fault.rs`, and the
//! switches of Meta's behaviour ([`Quirks`], [`UsageModel`]) in `quirks.rs`.
//!
//! A scenario file is TOML. It extends the built-in world of [`Scenario::demo`]: an entry with
//! the id of a built-in one replaces it, any other entry is added. `base = "empty"` starts from
//! nothing instead, for users who want to describe their own world completely.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::SandboxError;
use super::fault::Fault;
use super::quirks::{Quirks, UsageModel};

/// Id of the built-in app that tokenwarden manages in the demo and the tests.
pub const DEMO_APP_ID: &str = "634974688087057";
/// Secret of the built-in app (32 hex digits, like a real one).
pub const DEMO_APP_SECRET: &str = "a3f1c0de5b7e4d2c9f8a6b4c2d0e1f37";
/// A second app of the demo world, for "token of another app" cases.
pub const OTHER_APP_ID: &str = "990011223344556";
/// Secret of [`OTHER_APP_ID`].
pub const OTHER_APP_SECRET: &str = "5e0c1d2b3a4f5e6d7c8b9a0f1e2d3c4b";
/// The demo WhatsApp Business Account.
pub const DEMO_WABA_ID: &str = "102290129340398";
/// The phone-number id of the demo WABA.
pub const DEMO_PHONE_NUMBER_ID: &str = "106540352242922";
/// A second WABA, not granted to the default tokens.
pub const OTHER_WABA_ID: &str = "109876543210987";
/// The phone-number id of [`OTHER_WABA_ID`].
pub const OTHER_PHONE_NUMBER_ID: &str = "107700000000001";
/// The demo system user, with the demo app installed (can mint tokens).
pub const DEMO_SYSTEM_USER_ID: &str = "104169029247128";
/// A system user without the app installed (minting fails).
pub const UNINSTALLED_SYSTEM_USER_ID: &str = "104169029247999";
/// The person behind the demo user tokens.
pub const DEMO_USER_ID: &str = "122094861530012345";
/// The demo Tech Provider customer's business (Embedded Signup).
pub const DEMO_CLIENT_BUSINESS_ID: &str = "506914307656634";
/// The demo ad account (Marketing API), without `act_`; running (`account_status` 1).
pub const DEMO_AD_ACCOUNT_ID: &str = "1234567890123456";
/// The demo Facebook Page (Pages API, Messenger).
pub const DEMO_PAGE_ID: &str = "110200300400500";
/// The demo Page's name.
pub const DEMO_PAGE_NAME: &str = "Lucky Shrub";
/// The demo Instagram professional account (`user_id` of `GET /me` on the Instagram host).
pub const DEMO_INSTAGRAM_USER_ID: &str = "17841400008460056";
/// The demo Instagram account's username.
pub const DEMO_INSTAGRAM_USERNAME: &str = "lucky_shrub";
/// The demo Threads account (`id` of `GET /me` on the Threads host).
pub const DEMO_THREADS_USER_ID: &str = "25043713268621055";
/// The demo Threads account's username.
pub const DEMO_THREADS_USERNAME: &str = "luckyshrub.threads";

/// The two scopes a WhatsApp Cloud API token needs.
pub const WHATSAPP_SCOPES: [&str; 2] = [
    "whatsapp_business_management",
    "whatsapp_business_messaging",
];

/// A complete simulated world. Build one with [`Scenario::demo`], [`Scenario::load`] or by
/// deserializing TOML (which extends the demo world, see the module documentation).
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "ScenarioFile")]
pub struct Scenario {
    /// Sandbox unix time at start; `None` means the real time. The clock ticks from there.
    pub now: Option<i64>,
    /// Added once to every Graph HTTP request, a batch included (never to the admin API).
    pub latency_ms: u64,
    /// How `X-App-Usage` grows with the calls made.
    pub usage: UsageModel,
    /// Apps; the first one is the default app of issued tokens.
    pub apps: Vec<AppDef>,
    /// WhatsApp Business Accounts with their phone numbers.
    pub wabas: Vec<WabaDef>,
    /// System users of the business.
    pub system_users: Vec<SystemUserDef>,
    /// Approved message templates.
    pub templates: Vec<TemplateDef>,
    /// Recipients a message may be sent to (digits only); empty means anyone.
    pub recipients: Vec<String>,
    /// Tokens that exist from the start, with fixed values.
    pub tokens: Vec<TokenDef>,
    /// Faults pending from the start.
    pub faults: Vec<Fault>,
    /// Ways real Meta differs from the strict documented default (`[quirks]` in a file).
    pub quirks: Quirks,
}

/// An app registered with Meta.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppDef {
    /// Numeric app id, as a string.
    pub id: String,
    /// Display name (`application` in debug_token).
    #[serde(default)]
    pub name: String,
    /// The app secret: 32 hex digits for a real app.
    pub secret: String,
    /// "Require App Secret": every call with a user or system-user token needs `appsecret_proof`.
    #[serde(default = "yes")]
    pub require_app_secret: bool,
}

/// A WhatsApp Business Account.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WabaDef {
    /// WABA id.
    pub id: String,
    /// Business name shown for the WABA.
    #[serde(default)]
    pub name: String,
    /// Its phone numbers.
    #[serde(default, rename = "phone")]
    pub phones: Vec<PhoneDef>,
}

/// A WhatsApp business phone number.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneDef {
    /// Phone-number id (not the phone number).
    pub id: String,
    /// The number as shown, for example `+1 555-010-4477`.
    pub display_phone_number: String,
    /// The approved business name.
    #[serde(default)]
    pub verified_name: String,
    /// GREEN, YELLOW, RED or NA.
    #[serde(default = "green")]
    pub quality_rating: String,
    /// Usually VERIFIED or NOT_VERIFIED.
    #[serde(default = "verified")]
    pub code_verification_status: String,
    /// Usually APPROVED.
    #[serde(default = "approved")]
    pub name_status: String,
}

/// A system user of the business.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemUserDef {
    /// System-user id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Apps installed for this system user: only these can be named in `business_app` to mint.
    #[serde(default)]
    pub apps: Vec<String>,
    /// WABAs assigned to this system user: a minted token targets exactly these.
    #[serde(default)]
    pub wabas: Vec<String>,
    /// An admin system user (the default) may mint tokens; an employee one may not.
    #[serde(default = "yes")]
    pub admin: bool,
}

/// An approved message template.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDef {
    /// Template name, for example `hello_world`.
    pub name: String,
    /// Language code, for example `en_US`.
    #[serde(default = "en_us")]
    pub language: String,
}

/// What kind of principal a token speaks for (debug_token's `type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenKind {
    /// A business system user (WhatsApp server tokens).
    #[serde(alias = "system_user")]
    SystemUser,
    /// A person.
    #[serde(alias = "user")]
    User,
    /// A Facebook page.
    #[serde(alias = "page")]
    Page,
    /// The app itself: `APP_ID|APP_SECRET`.
    #[serde(alias = "app")]
    App,
    /// An Instagram User token of the Instagram API with Instagram Login, served on the
    /// Instagram host (`/instagram/...`); Graph cannot parse it.
    #[serde(alias = "instagram")]
    Instagram,
    /// A Threads user token, served on the Threads host (`/threads/...`).
    #[serde(alias = "threads")]
    Threads,
}

impl TokenKind {
    /// The name debug_token shows in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::SystemUser => "SYSTEM_USER",
            TokenKind::User => "USER",
            TokenKind::Page => "PAGE",
            TokenKind::App => "APP",
            TokenKind::Instagram => "INSTAGRAM",
            TokenKind::Threads => "THREADS",
        }
    }

    /// Whether tokens of this kind live on another host than Graph's (Instagram, Threads):
    /// graph.facebook.com cannot parse them.
    pub fn other_host(self) -> bool {
        matches!(self, TokenKind::Instagram | TokenKind::Threads)
    }
}

/// How long an issued token lives.
///
/// In TOML or JSON: `"never"`, `"60d"`, `"24h"`, `{ after_secs = N }` or `{ expires_in = N }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum Lifetime {
    /// `expires_at: 0`.
    #[serde(rename = "never")]
    Never,
    /// 60 days after issue, rounded up to the next full hour, as Meta does.
    #[serde(rename = "60d")]
    Days60,
    /// 24 hours after issue, rounded up to the next full hour (WhatsApp "temporary" tokens).
    #[serde(rename = "24h")]
    Hours24,
    /// Exactly this many seconds after issue.
    #[serde(rename = "after_secs")]
    AfterSecs(i64),
    /// Exactly this many seconds from now, whatever the issue time (negative: already expired).
    #[serde(rename = "expires_in")]
    ExpiresIn(i64),
}

/// The shape of a token to create (`Sandbox::issue_token`, `POST /_sandbox/tokens`).
///
/// As JSON every field is optional; the defaults are those of [`TokenSpec::system_user_60d`].
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSpec {
    /// Principal kind.
    pub kind: TokenKind,
    /// Owning app; `None` means the scenario's first app.
    pub app_id: Option<String>,
    /// Granted permissions.
    pub scopes: Vec<String>,
    /// WABAs in the WhatsApp scopes' `target_ids`.
    pub wabas: Vec<String>,
    /// Lifetime from issue.
    pub lifetime: Lifetime,
    /// How long ago the token was issued (moves `issued_at` and the expiry back).
    pub issued_ago_secs: i64,
    /// User, system-user or page id; `None` picks the demo one for the kind.
    pub user_id: Option<String>,
}

impl Default for TokenSpec {
    fn default() -> Self {
        TokenSpec::system_user_60d()
    }
}

impl TokenSpec {
    /// A demo system-user token with both WhatsApp scopes on the demo WABA, expiring in 60 days.
    pub fn system_user_60d() -> TokenSpec {
        TokenSpec {
            kind: TokenKind::SystemUser,
            app_id: None,
            scopes: WHATSAPP_SCOPES.iter().map(|s| s.to_string()).collect(),
            wabas: vec![DEMO_WABA_ID.to_string()],
            lifetime: Lifetime::Days60,
            issued_ago_secs: 0,
            user_id: Some(DEMO_SYSTEM_USER_ID.to_string()),
        }
    }

    /// Like [`TokenSpec::system_user_60d`] but never expiring (`expires_at: 0`).
    pub fn system_user_never() -> TokenSpec {
        TokenSpec {
            lifetime: Lifetime::Never,
            ..TokenSpec::system_user_60d()
        }
    }

    /// A long-lived user token (60 days, data access 90 days) with the WhatsApp scopes.
    pub fn user() -> TokenSpec {
        TokenSpec {
            kind: TokenKind::User,
            user_id: Some(DEMO_USER_ID.to_string()),
            ..TokenSpec::system_user_60d()
        }
    }

    /// A long-lived Instagram User token (Instagram API with Instagram Login), 60 days, with
    /// `instagram_business_basic`, for the demo Instagram account.
    pub fn instagram() -> TokenSpec {
        TokenSpec {
            kind: TokenKind::Instagram,
            app_id: None,
            scopes: vec!["instagram_business_basic".to_string()],
            wabas: Vec::new(),
            lifetime: Lifetime::Days60,
            issued_ago_secs: 0,
            user_id: Some(DEMO_INSTAGRAM_USER_ID.to_string()),
        }
    }

    /// A 60-day system-user token of the Marketing API (`ads_read`, `ads_management`,
    /// `business_management`) for the demo ad account's business.
    pub fn marketing() -> TokenSpec {
        TokenSpec {
            scopes: ["ads_read", "ads_management", "business_management"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            wabas: Vec::new(),
            ..TokenSpec::system_user_60d()
        }
    }

    /// A Page token of the demo Page, as taken from a long-lived user token: it never expires
    /// (`expires_at: 0`), its data access lapses 90 days after issue, `profile_id` the Page.
    pub fn page() -> TokenSpec {
        TokenSpec {
            kind: TokenKind::Page,
            app_id: None,
            scopes: [
                "pages_show_list",
                "pages_read_engagement",
                "pages_manage_metadata",
                "pages_messaging",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            wabas: Vec::new(),
            lifetime: Lifetime::Never,
            issued_ago_secs: 0,
            user_id: Some(DEMO_PAGE_ID.to_string()),
        }
    }

    /// A long-lived Threads user token, 60 days, with `threads_basic`, for the demo account.
    pub fn threads() -> TokenSpec {
        TokenSpec {
            kind: TokenKind::Threads,
            scopes: vec!["threads_basic".to_string()],
            user_id: Some(DEMO_THREADS_USER_ID.to_string()),
            ..TokenSpec::instagram()
        }
    }

    /// The 24-hour "temporary" token of the WhatsApp API Setup page (a user token).
    pub fn temporary_24h() -> TokenSpec {
        TokenSpec {
            lifetime: Lifetime::Hours24,
            ..TokenSpec::user()
        }
    }

    /// Replaces the scopes.
    pub fn scopes(mut self, scopes: &[&str]) -> TokenSpec {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Replaces the target WABAs (`&[]`: a token without any WhatsApp asset).
    pub fn wabas(mut self, wabas: &[&str]) -> TokenSpec {
        self.wabas = wabas.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Makes the token belong to another app.
    pub fn app(mut self, app_id: impl Into<String>) -> TokenSpec {
        self.app_id = Some(app_id.into());
        self
    }

    /// Makes the token expire exactly `secs` from now (negative: already expired).
    pub fn expiring_in(mut self, secs: i64) -> TokenSpec {
        self.lifetime = Lifetime::ExpiresIn(secs);
        self
    }

    /// Sets the lifetime.
    pub fn lifetime(mut self, lifetime: Lifetime) -> TokenSpec {
        self.lifetime = lifetime;
        self
    }

    /// Backdates the issue (and so the expiry of relative lifetimes).
    pub fn issued_ago(mut self, secs: i64) -> TokenSpec {
        self.issued_ago_secs = secs;
        self
    }

    /// Sets the user, system-user or page id.
    pub fn user_id(mut self, id: impl Into<String>) -> TokenSpec {
        self.user_id = Some(id.into());
        self
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: TokenKind) -> TokenSpec {
        self.kind = kind;
        self
    }
}

/// The state of a predefined token (scenario `[[token]] status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatusDef {
    /// Works until its expiry.
    #[default]
    Valid,
    /// Already expired: without an explicit `expires_at`, it expired an hour ago, on the hour.
    Expired,
    /// Invalidated with `subcode` (default 460).
    Invalidated,
    /// Revoked through `oauth/revoke` (190/466).
    Revoked,
}

/// A token that exists from the start (scenario `[[token]]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDef {
    /// The token string, used verbatim.
    pub value: String,
    /// Kind, default SYSTEM_USER.
    #[serde(default = "system_user_kind")]
    pub kind: TokenKind,
    /// Owning app, default the first app.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Scopes, default the WhatsApp pair.
    #[serde(default = "whatsapp_scopes")]
    pub scopes: Vec<String>,
    /// Target WABAs, default the demo WABA.
    #[serde(default = "demo_wabas")]
    pub wabas: Vec<String>,
    /// Lifetime, default 60 days.
    #[serde(default = "days60")]
    pub lifetime: Lifetime,
    /// Backdates the issue.
    #[serde(default)]
    pub issued_ago_secs: i64,
    /// Explicit issue time (overrides `issued_ago_secs`).
    #[serde(default)]
    pub issued_at: Option<i64>,
    /// Explicit expiry, 0 for never (overrides `lifetime`).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// User, system-user or page id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Starting state.
    #[serde(default)]
    pub status: TokenStatusDef,
    /// Subcode for `invalidated` (460, 467, 458, ...).
    #[serde(default)]
    pub subcode: Option<u32>,
}

impl TokenDef {
    /// The spec part of the definition.
    pub fn spec(&self) -> TokenSpec {
        TokenSpec {
            kind: self.kind,
            app_id: self.app_id.clone(),
            scopes: self.scopes.clone(),
            wabas: self.wabas.clone(),
            lifetime: self.lifetime,
            issued_ago_secs: self.issued_ago_secs,
            user_id: self.user_id.clone(),
        }
    }
}

fn yes() -> bool {
    true
}
fn green() -> String {
    "GREEN".into()
}
fn verified() -> String {
    "VERIFIED".into()
}
fn approved() -> String {
    "APPROVED".into()
}
fn en_us() -> String {
    "en_US".into()
}
fn system_user_kind() -> TokenKind {
    TokenKind::SystemUser
}
fn whatsapp_scopes() -> Vec<String> {
    WHATSAPP_SCOPES.iter().map(|s| s.to_string()).collect()
}
fn demo_wabas() -> Vec<String> {
    vec![DEMO_WABA_ID.to_string()]
}
fn days60() -> Lifetime {
    Lifetime::Days60
}

/// Where a scenario file starts from.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Base {
    #[default]
    Demo,
    Empty,
}

/// The file form of a scenario: every table optional, merged onto the base world.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ScenarioFile {
    base: Base,
    now: Option<i64>,
    latency_ms: Option<u64>,
    usage: Option<UsageModel>,
    app: Vec<AppDef>,
    waba: Vec<WabaDef>,
    system_user: Vec<SystemUserDef>,
    template: Vec<TemplateDef>,
    recipients: Option<Vec<String>>,
    token: Vec<TokenDef>,
    fault: Vec<Fault>,
    quirks: Option<Quirks>,
}

/// Replaces the entry with the same id, or appends.
fn merge_by<T>(into: &mut Vec<T>, items: Vec<T>, id: impl Fn(&T) -> String) {
    for item in items {
        let key = id(&item);
        match into.iter_mut().find(|e| id(e) == key) {
            Some(slot) => *slot = item,
            None => into.push(item),
        }
    }
}

impl From<ScenarioFile> for Scenario {
    fn from(file: ScenarioFile) -> Scenario {
        let mut s = match file.base {
            Base::Demo => Scenario::demo(),
            Base::Empty => Scenario::empty(),
        };
        if file.now.is_some() {
            s.now = file.now;
        }
        if let Some(ms) = file.latency_ms {
            s.latency_ms = ms;
        }
        if let Some(u) = file.usage {
            s.usage = u;
        }
        merge_by(&mut s.apps, file.app, |a| a.id.clone());
        merge_by(&mut s.wabas, file.waba, |w| w.id.clone());
        merge_by(&mut s.system_users, file.system_user, |u| u.id.clone());
        merge_by(&mut s.templates, file.template, |t| {
            format!("{}\u{0}{}", t.name, t.language)
        });
        // A recipients list states the whole allowed list: replacing is what users expect.
        if let Some(r) = file.recipients {
            s.recipients = r;
        }
        merge_by(&mut s.tokens, file.token, |t| t.value.clone());
        s.faults.extend(file.fault);
        if let Some(q) = file.quirks {
            s.quirks = q;
        }
        s
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::demo()
    }
}

impl Scenario {
    /// A world with nothing in it (the start of `base = "empty"` files).
    pub fn empty() -> Scenario {
        Scenario {
            now: None,
            latency_ms: 0,
            usage: UsageModel::default(),
            apps: Vec::new(),
            wabas: Vec::new(),
            system_users: Vec::new(),
            templates: Vec::new(),
            recipients: Vec::new(),
            tokens: Vec::new(),
            faults: Vec::new(),
            quirks: Quirks::default(),
        }
    }

    /// The built-in world: the BillByteKOT Receipts app, two WABAs, two system users,
    /// `hello_world`, two allowed recipients. Its ids are the `DEMO_*` constants.
    pub fn demo() -> Scenario {
        let phone = |id: &str, display: &str, name: &str, quality: &str| PhoneDef {
            id: id.into(),
            display_phone_number: display.into(),
            verified_name: name.into(),
            quality_rating: quality.into(),
            code_verification_status: "VERIFIED".into(),
            name_status: "APPROVED".into(),
        };
        Scenario {
            now: None,
            latency_ms: 0,
            usage: UsageModel::default(),
            apps: vec![
                AppDef {
                    id: DEMO_APP_ID.into(),
                    name: "BillByteKOT Receipts".into(),
                    secret: DEMO_APP_SECRET.into(),
                    require_app_secret: true,
                },
                AppDef {
                    id: OTHER_APP_ID.into(),
                    name: "Other Shop Integrations".into(),
                    secret: OTHER_APP_SECRET.into(),
                    require_app_secret: true,
                },
            ],
            wabas: vec![
                WabaDef {
                    id: DEMO_WABA_ID.into(),
                    name: "BillByteKOT".into(),
                    phones: vec![phone(
                        DEMO_PHONE_NUMBER_ID,
                        "+1 555-010-4477",
                        "BillByteKOT",
                        "GREEN",
                    )],
                },
                WabaDef {
                    id: OTHER_WABA_ID.into(),
                    name: "Other Shop".into(),
                    phones: vec![phone(
                        OTHER_PHONE_NUMBER_ID,
                        "+1 555-010-9000",
                        "Other Shop",
                        "YELLOW",
                    )],
                },
            ],
            system_users: vec![
                SystemUserDef {
                    id: DEMO_SYSTEM_USER_ID.into(),
                    name: "tokenwarden".into(),
                    apps: vec![DEMO_APP_ID.into()],
                    wabas: vec![DEMO_WABA_ID.into()],
                    admin: true,
                },
                SystemUserDef {
                    id: UNINSTALLED_SYSTEM_USER_ID.into(),
                    name: "reporting".into(),
                    apps: Vec::new(),
                    wabas: vec![DEMO_WABA_ID.into()],
                    admin: true,
                },
            ],
            templates: vec![TemplateDef {
                name: "hello_world".into(),
                language: "en_US".into(),
            }],
            recipients: vec!["15550001111".into(), "15550002222".into()],
            tokens: Vec::new(),
            faults: Vec::new(),
            quirks: Quirks::default(),
        }
    }

    /// Reads a TOML scenario file. Errors name the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Scenario, SandboxError> {
        let text = std::fs::read_to_string(path).map_err(|source| SandboxError::ReadScenario {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::from_toml(&text).map_err(|message| SandboxError::BadScenario {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and checks scenario TOML; the error is a human-readable description.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.check()?;
        Ok(s)
    }

    /// Cross-checks references: a scenario that names an app or WABA it does not define is a
    /// typo the user wants to hear about, not a silently broken world.
    pub fn check(&self) -> Result<(), String> {
        let app_known = |id: &str| self.apps.iter().any(|a| a.id == id);
        let waba_known = |id: &str| self.wabas.iter().any(|w| w.id == id);
        for u in &self.system_users {
            for a in &u.apps {
                if !app_known(a) {
                    return Err(format!("system_user {}: unknown app {a}", u.id));
                }
            }
            for w in &u.wabas {
                if !waba_known(w) {
                    return Err(format!("system_user {}: unknown waba {w}", u.id));
                }
            }
        }
        for t in &self.tokens {
            if t.value.trim().is_empty() {
                return Err("token: empty value".into());
            }
            if let Some(a) = &t.app_id
                && !app_known(a)
            {
                return Err(format!("token with app_id {a}: unknown app"));
            }
            if self.apps.is_empty() {
                return Err("token defined but the scenario has no app".into());
            }
        }
        let mut ids = std::collections::HashSet::new();
        for id in self
            .wabas
            .iter()
            .flat_map(|w| std::iter::once(&w.id).chain(w.phones.iter().map(|p| &p.id)))
        {
            if !ids.insert(id) {
                return Err(format!("id {id} is used twice among wabas and phones"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Endpoint;

    #[test]
    fn a_file_extends_the_demo_world() {
        let s = Scenario::from_toml(
            r#"
            now = 1700000000
            recipients = ["+1 555 000 3333"]
            [[app]]
            id = "634974688087057"
            name = "Renamed"
            secret = "0123456789abcdef0123456789abcdef"
            [[template]]
            name = "receipt"
            language = "en_GB"
            [[token]]
            value = "EAAx"
            kind = "USER"
            lifetime = { expires_in = 60 }
            [[fault]]
            kind = "rate_limit"
            endpoint = "messages"
            code = 130429
            count = 0
            "#,
        )
        .unwrap();
        assert_eq!(s.now, Some(1_700_000_000));
        assert_eq!(s.apps.len(), 2, "same id replaces");
        assert_eq!(s.apps[0].name, "Renamed");
        assert!(s.apps[0].require_app_secret);
        assert_eq!(s.templates.len(), 2, "new template is added");
        assert_eq!(s.recipients, vec!["+1 555 000 3333"]);
        assert_eq!(s.tokens[0].lifetime, Lifetime::ExpiresIn(60));
        assert_eq!(s.tokens[0].kind, TokenKind::User);
        assert_eq!(
            s.faults,
            vec![Fault::rate_limit(Endpoint::Messages, 130429).times(0)]
        );
    }

    #[test]
    fn an_empty_base_starts_from_nothing() {
        let s = Scenario::from_toml("base = \"empty\"").unwrap();
        assert!(s.apps.is_empty() && s.wabas.is_empty() && s.recipients.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(Scenario::from_toml("latency = 5").is_err());
        assert!(Scenario::from_toml("[[fault]]\nkind = \"html\"\nbogus = 1").is_err());
        assert!(Scenario::from_toml("[[token]]\nvalue = \"EAAx\"\nstatuss = \"valid\"").is_err());
        assert!(serde_json::from_str::<TokenSpec>(r#"{"kind":"USER","wabbas":[]}"#).is_err());
    }

    #[test]
    fn token_spec_json_defaults_to_a_60_day_system_user_token() {
        let s: TokenSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(s.kind, TokenKind::SystemUser);
        assert_eq!(s.lifetime, Lifetime::Days60);
        assert_eq!(s.wabas, vec![DEMO_WABA_ID]);
        let s: TokenSpec =
            serde_json::from_str(r#"{"kind":"user","lifetime":"never","scopes":["email"]}"#)
                .unwrap();
        assert_eq!(s.kind, TokenKind::User);
        assert_eq!(s.lifetime, Lifetime::Never);
        assert_eq!(s.scopes, vec!["email"]);
    }
}
