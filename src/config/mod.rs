//! The configuration file: TOML in, a validated [`Config`] out, or every error at once.
//!
//! Two phases, as in ripgrep and vector: serde reads `Raw*` types (unknown keys are errors), then
//! [`validate`] turns them into typed values (ids checked, durations and URLs parsed, names
//! unique). Secrets are never in the file, only [`SecretRef`]s. Loading reads no secret and
//! makes no network call; `config check` resolves every reference with [`check_secrets`].

mod diag;
pub mod email;
mod paths;
pub mod receivers;
mod secret_ref;
mod secrets;
mod targets;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use diag::{Diagnostic, SourceMap};
pub use secret_ref::{SecretRef, SecretRefError};
pub use secrets::{SecretField, check_secrets};
pub use targets::{
    ApiAccess, DEFAULT_DOTENV_KEY, DeliveryConfig, GithubScope, ScanConfig, TargetConfig,
    TargetKind, VerifyConfig, Workload, WorkloadKind,
};

pub use crate::meta::kind::Kind;
use crate::meta::version::{ApiVersion, DEFAULT_VERSION};
use crate::policy::Policy;
pub use email::EmailConfig;

/// Where the config is read from when neither `--config` nor `TOKENWARDEN_CONFIG` is given.
pub const DEFAULT_PATH: &str = "/etc/tokenwarden/tokenwarden.toml";
/// Meta's Graph host.
pub const META_GRAPH_URL: &str = "https://graph.facebook.com";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Where tokenwarden keeps its state (and the default file store).
    pub state_dir: PathBuf,
    /// The Meta app and Graph API settings.
    pub meta: MetaConfig,
    /// The managed tokens: the `[[token]]`s in file order, then (once
    /// [`crate::discover`] has expanded them) the members of each group.
    pub tokens: Vec<TokenConfig>,
    /// Token groups, whose members are found in a store on each run.
    pub groups: Vec<GroupConfig>,
    /// Where on-call email goes; without it (and without receivers) alerts are only logged.
    pub email: Option<EmailConfig>,
    /// The on-call channels beside email (`[[receiver]]`), in file order.
    pub receivers: Vec<receivers::ReceiverConfig>,
    /// The optional `/metrics` and `/healthz` listener.
    pub metrics: Option<MetricsConfig>,
    /// How new tokens reach the environments.
    pub delivery: DeliveryConfig,
    /// When `audit.jsonl` is rotated and how many old files are kept (`[audit]`).
    pub audit: crate::audit::AuditLimits,
    /// Things that work but are probably not what was meant, with their positions.
    pub warnings: Vec<String>,
}

/// The `[metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address to listen on (loopback by default).
    pub listen: std::net::SocketAddr,
    /// `/healthz` fails when the daemon's loop has not beaten for this long.
    pub stall_after: Duration,
}

/// When the daemon checks: a cron expression in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// Six fields (seconds first); a five-field expression is stored with `0` seconds.
    pub cron: String,
    /// IANA time-zone name (`UTC` by default); daylight-saving changes are followed.
    pub timezone: String,
}

/// The default schedule: every six hours, at minute 7 (off the hour, when everyone else runs).
pub const DEFAULT_CRON: &str = "0 7 */6 * * *";

/// The Meta app that owns the tokens, and how to reach Graph.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// The app's numeric id.
    pub app_id: String,
    /// Where the app secret lives.
    pub app_secret: SecretRef,
    /// The pinned Graph API version.
    pub api_version: ApiVersion,
    /// Graph base URL without version (Meta's, or a sandbox).
    pub base_url: reqwest::Url,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Attempts for a transient failure (1 = no retry).
    pub attempts: u32,
    /// First backoff delay; doubles each attempt, with jitter.
    pub retry_delay: Duration,
    /// The proxy for Graph requests (`[meta] proxy`): https, or plain http only to a loopback
    /// proxy. Never taken from the environment; loopback Graph URLs never use it.
    pub proxy: Option<reqwest::Url>,
}

/// One managed token.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Unique name, used in logs, emails and commands (`--token NAME`).
    pub name: String,
    /// What the token is for (`kind`, default `whatsapp`): decides the host, the proof that
    /// it works and how it is renewed ([`crate::meta::kind`]).
    pub kind: Kind,
    /// For `instagram` and `threads`: that product's own app (its id and secret from the App
    /// Dashboard, not the Meta app's), used to exchange a short-lived token for a long-lived
    /// one when it is staged. `None`: staged tokens are taken as they are.
    pub app: Option<KindApp>,
    /// For `page`: the Page, whether it is used for Messenger, and the long-lived user token
    /// a new Page token is taken from.
    pub page: Option<PageConfig>,
    /// For `marketing`: the ad account ids (digits, without `act_`) that must answer with a
    /// running status.
    pub ad_accounts: Vec<String>,
    /// For `whatsapp_business`: the customer's business and the partner's own token the
    /// business token is fetched again with.
    pub business: Option<BusinessConfig>,
    /// The WhatsApp phone-number id the token must be able to read.
    pub phone_number_id: Option<String>,
    /// The WhatsApp Business Account id that must be among the token's targets.
    pub waba_id: Option<String>,
    /// Where the token's current value lives.
    pub store: StoreConfig,
    /// When the daemon checks it.
    pub schedule: Schedule,
    /// When to warn and how often to repeat.
    pub policy: Policy,
    /// Where a successor comes from and when it replaces this token.
    pub rotation: RotationConfig,
    /// The environments the token is delivered to.
    pub targets: Vec<TargetConfig>,
}

/// The Instagram or Threads app of a token (`app = { app_id = "...", app_secret = { env = "..." } }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindApp {
    /// The product's app id (Instagram app id, Threads app id).
    pub app_id: String,
    /// Where the product's app secret lives.
    pub app_secret: SecretRef,
}

/// Secret tag holding a group member's WhatsApp phone-number id ([`crate::discover`]).
pub const TAG_PHONE: &str = "tokenwarden:phone_number_id";
/// Secret tag holding a group member's WhatsApp Business Account id.
pub const TAG_WABA: &str = "tokenwarden:waba_id";
/// Secret tag holding the customer's business id (from Embedded Signup) of a group member of
/// kind `whatsapp_business`: its business token is fetched again for that business.
pub const TAG_CLIENT_BUSINESS: &str = "tokenwarden:client_business_id";

/// The customer of a `whatsapp_business` token
/// (`business = { client_business_id = "...", partner_token = { env = "..." } }`; a
/// `[[group]]` gives only `partner_token`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessConfig {
    /// The customer's business id (from Embedded Signup). Required on a `[[token]]` (the
    /// config check says so); a group's member takes it from its secret's tag
    /// [`TAG_CLIENT_BUSINESS`], so it is `None` for a member without the tag, and its renewal
    /// fails naming the tag.
    #[serde(default)]
    pub client_business_id: Option<String>,
    /// The Tech Provider's own system-user token, allowed to fetch the customer's business
    /// token (`POST /{client-business-id}/system_user_access_tokens`).
    pub partner_token: SecretRef,
}

/// The Page of a `page` token (`page = { id = "...", messenger = true, user_token = { env = "..." } }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageConfig {
    /// The Page id the token must read.
    pub id: String,
    /// Whether the Page is used for Messenger: then it must be subscribed to the app
    /// (`GET /{page-id}/subscribed_apps`).
    #[serde(default)]
    pub messenger: bool,
    /// A long-lived user token of a person with a task on the Page, from which
    /// `source = "refresh"` takes a new Page token (`GET /{page-id}?fields=access_token`).
    pub user_token: Option<SecretRef>,
}

/// A `[[group]]`: every token found in a store (secrets under a name prefix or with a tag),
/// each managed with the group's settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Unique name; each member's token name is `<group>.<member>`.
    pub name: String,
    /// Where the members are found.
    pub discover: DiscoverConfig,
    /// A scheduled check of the group is spread over this long (in batches of 50) rather
    /// than sent all at once: Meta's rate limits are per hour, and bursts hit them.
    pub spread: Duration,
    /// The settings every member inherits. Its name is the group's; its store and ids are
    /// replaced per member, and `{token}` / `{member}` in its targets are filled in.
    pub template: TokenConfig,
}

/// Default of a group's `spread`.
pub const DEFAULT_SPREAD: Duration = Duration::from_secs(5 * 60);

/// Where a group's tokens are found (`discover` in a `[[group]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscoverConfig {
    /// The entries of a file store whose key starts with `key_prefix`.
    File {
        /// The file; default `<state_dir>/tokens.json`.
        path: Option<PathBuf>,
        /// The entries' common prefix (the rest names the member).
        key_prefix: String,
    },
    /// Secrets Manager secrets (`ListSecrets`, paged) under a name prefix, with a tag, or both.
    Aws {
        /// The secrets' common name prefix (the rest names the member).
        name_prefix: Option<String>,
        /// Only secrets carrying this tag key...
        tag_key: Option<String>,
        /// ...with this value.
        tag_value: Option<String>,
        /// Region; default from the AWS default chain.
        region: Option<String>,
        /// Endpoint override (a VPC endpoint, or a test server).
        endpoint: Option<String>,
        /// When the secrets are JSON objects, the key holding the token.
        json_key: Option<String>,
    },
}

/// How a token is rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    /// Where a new token comes from.
    pub source: Source,
    /// How long before the effective expiry to rotate; `None` is the default rule (a third
    /// of the lifetime left, and at least 7 days before).
    pub rotate_before: Option<Duration>,
    /// How long the old token keeps working after promotion before it is revoked (every
    /// environment has time to pick up the new one); `None` never revokes it.
    pub revoke_after: Option<Duration>,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            source: Source::Staged,
            rotate_before: None,
            revoke_after: Some(DEFAULT_REVOKE_AFTER),
        }
    }
}

/// Default grace period between promotion and revoking the old token.
pub const DEFAULT_REVOKE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Where a token's successor comes from (`source` in a `[[token]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A person or another tool stages a candidate in the store (`tokenwarden stage`, or the
    /// AWS CLI with the `AWSPENDING` label).
    Staged,
    /// Meta's refresh API (`fb_exchange_token`), for 60-day tokens only.
    Refresh,
    /// `POST /{system-user-id}/access_tokens` with an admin token.
    Mint(MintConfig),
}

impl Source {
    /// The word used in config, logs and emails.
    pub fn word(&self) -> &'static str {
        match self {
            Source::Staged => "staged",
            Source::Refresh => "refresh",
            Source::Mint(_) => "mint",
        }
    }
}

/// How to mint a system-user token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintConfig {
    /// The system user the token acts as.
    pub system_user_id: String,
    /// A token of an admin (or admin system user) of the same business, allowed to mint.
    pub admin_token: SecretRef,
    /// A 60-day token (`true`, the default and Meta's recommendation) or a non-expiring one
    /// (for consumers that accept nothing else).
    pub expiring: bool,
    /// The permissions to ask for. Empty (the default): the current token's, from its
    /// `debug_token`, so a successor never loses one that a consumer needs.
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMint {
    system_user_id: Option<Spanned<String>>,
    admin_token: Option<SecretRef>,
    lifetime: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<String>>>,
}

/// A secret store holding a token's versions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// A JSON file of mode 0600 on this machine: the embedded default.
    File {
        /// The file; default `<state_dir>/tokens.json`.
        path: Option<PathBuf>,
        /// The entry in the file; default the token's name.
        key: Option<String>,
    },
    /// AWS Secrets Manager.
    Aws {
        /// Secret name or ARN.
        secret_id: String,
        /// Region; default from the AWS default chain.
        region: Option<String>,
        /// Endpoint override (a VPC endpoint, or a test server).
        endpoint: Option<String>,
        /// When the secret is a JSON object, the key holding the token.
        json_key: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<Spanned<String>>,
    meta: Option<Spanned<RawMeta>>,
    schedule: Option<RawSchedule>,
    alerts: Option<RawAlerts>,
    email: Option<Spanned<EmailConfig>>,
    #[serde(default)]
    receiver: Vec<Spanned<receivers::ReceiverConfig>>,
    metrics: Option<RawMetrics>,
    delivery: Option<targets::RawDelivery>,
    audit: Option<RawAudit>,
    #[serde(default)]
    token: Vec<Spanned<RawToken>>,
    #[serde(default)]
    group: Vec<Spanned<RawGroup>>,
}

/// A `[[group]]`: `RawToken`'s settings without `name`'s meaning, `store` and the ids, plus
/// `discover` and `spread`. The shared fields are spelled out again rather than flattened,
/// because serde cannot refuse unknown keys (`deny_unknown_fields`) through `flatten`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    page: Option<Spanned<PageConfig>>,
    ad_accounts: Option<Spanned<Vec<String>>>,
    business: Option<Spanned<BusinessConfig>>,
    app: Option<Spanned<KindApp>>,
    discover: Option<Spanned<DiscoverConfig>>,
    spread: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    thresholds: Option<Spanned<Vec<String>>>,
    repeat_interval: Option<Spanned<String>>,
    cannot_check_after: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    rotate_before: Option<Spanned<String>>,
    revoke_after: Option<Spanned<String>>,
    mint: Option<Spanned<RawMint>>,
    #[serde(default)]
    target: Vec<Spanned<targets::RawTarget>>,
}

impl RawGroup {
    /// The template's fields as a token's (the store and ids come from each member).
    fn into_token(self) -> RawToken {
        RawToken {
            name: None,
            kind: self.kind,
            app: self.app,
            page: self.page,
            ad_accounts: self.ad_accounts,
            business: self.business,
            phone_number_id: None,
            waba_id: None,
            store: None,
            cron: self.cron,
            thresholds: self.thresholds,
            repeat_interval: self.repeat_interval,
            cannot_check_after: self.cannot_check_after,
            max_age: self.max_age,
            source: self.source,
            rotate_before: self.rotate_before,
            revoke_after: self.revoke_after,
            mint: self.mint,
            target: self.target,
        }
    }
}

/// `[audit]`: `max_size_mb` (rotate above it) and `keep` (old files kept).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    max_size_mb: Option<Spanned<u64>>,
    keep: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
    stall_after: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    cron: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    thresholds: Option<Spanned<Vec<String>>>,
    repeat_interval: Option<Spanned<String>>,
    cannot_check_after: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    app_id: Option<Spanned<String>>,
    app_secret: Option<SecretRef>,
    api_version: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    attempts: Option<Spanned<u32>>,
    retry_delay: Option<Spanned<String>>,
    proxy: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    page: Option<Spanned<PageConfig>>,
    ad_accounts: Option<Spanned<Vec<String>>>,
    business: Option<Spanned<BusinessConfig>>,
    app: Option<Spanned<KindApp>>,
    phone_number_id: Option<Spanned<String>>,
    waba_id: Option<Spanned<String>>,
    store: Option<Spanned<StoreConfig>>,
    cron: Option<Spanned<String>>,
    thresholds: Option<Spanned<Vec<String>>>,
    repeat_interval: Option<Spanned<String>>,
    cannot_check_after: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    rotate_before: Option<Spanned<String>>,
    revoke_after: Option<Spanned<String>>,
    mint: Option<Spanned<RawMint>>,
    #[serde(default)]
    target: Vec<Spanned<targets::RawTarget>>,
}

/// Why a configuration could not be used. Either way the caller exits 78.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has errors; all of them are listed.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
    format!(
        "{} error(s) in the configuration:\n{}",
        diags.len(),
        lines.join("\n")
    )
}

/// A loaded config and the warnings found while loading it.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Things that work but should be fixed (loose file mode, ...).
    pub warnings: Vec<String>,
}

/// The path to use: the flag, else `TOKENWARDEN_CONFIG`, else [`DEFAULT_PATH`].
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("TOKENWARDEN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads and validates the config at `path`.
///
/// # Errors
/// [`ConfigError`] with every problem found.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut warnings = Vec::new();
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o007 != 0 {
            warnings.push(format!(
                "config file `{}` is readable by others (mode {:o}); run `chmod o-rwx {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            ));
        }
    }
    let config = parse(path, &text).map_err(ConfigError::Invalid)?;
    let problems = paths::check(&SourceMap::new(path, &text), &text, &config);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    warnings.extend(config.warnings.iter().cloned());
    Ok(Loaded { config, warnings })
}

/// Parses and validates config text that was read from `path`.
///
/// # Errors
/// Every diagnostic found.
pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Diagnostic>> {
    let map = SourceMap::new(path, text);
    let (raw, mut diags) = diag::deserialize_all::<RawConfig>(&map, text);
    match raw.map(|raw| validate(&map, raw)) {
        Some(Ok(config)) if diags.is_empty() => Ok(config),
        Some(Err(more)) => {
            diags.extend(more);
            diags.sort_by_key(|d| (d.line, d.column));
            Err(diags)
        }
        _ => Err(diags),
    }
}

fn validate(map: &SourceMap<'_>, raw: RawConfig) -> Result<Config, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut warnings = Vec::new();
    let state_dir = state_dir_field(map, &mut diags, raw.state_dir);

    // Required fields are optional in the raw types so that one missing field does not hide the
    // rest of the file's errors; they are reported here instead.
    let Some(meta) = raw.meta else {
        diags.push(map.at(
            0,
            "meta",
            "missing table [meta] with `app_id` and `app_secret`",
        ));
        return Err(diags);
    };
    let meta = meta_section(map, &mut diags, meta);

    if let Some(e) = &raw.email {
        for (field, problem) in e.get_ref().problems() {
            diags.push(map.at(e.span().start, format!("email.{field}"), problem));
        }
    }
    for (i, r) in raw.receiver.iter().enumerate() {
        for (field, problem) in r.get_ref().problems() {
            diags.push(map.at(r.span().start, format!("receiver[{i}].{field}"), problem));
        }
    }
    let receiver_at: Vec<usize> = raw.receiver.iter().map(|r| r.span().start).collect();
    let receiver_list: Vec<receivers::ReceiverConfig> =
        raw.receiver.into_iter().map(Spanned::into_inner).collect();
    for (i, problem) in receivers::duplicate_names(&receiver_list) {
        diags.push(map.at(receiver_at[i], format!("receiver[{i}].name"), problem));
    }
    let delivery = targets::delivery(map, &mut diags, raw.delivery);
    let audit = audit_limits(map, &mut diags, raw.audit.unwrap_or_default());
    let metrics = raw.metrics.map(|m| metrics_section(map, &mut diags, m));
    let (timezone, default_cron) =
        schedule_section(map, &mut diags, raw.schedule.unwrap_or_default());
    let raw_alerts = raw.alerts.unwrap_or_default();
    let default_policy = policy_fields(map, &mut diags, "alerts", &raw_alerts, &Policy::default());
    let defaults = Defaults {
        cron: &default_cron,
        timezone: &timezone,
        policy: &default_policy,
    };

    let tokens = token_sections(map, &mut diags, &mut warnings, raw.token, &defaults);
    let groups = group_sections(map, &mut diags, &mut warnings, raw.group, &defaults);
    if tokens.is_empty() && groups.is_empty() && diags.is_empty() {
        diags.push(map.at(
            0,
            "token",
            "no token configured: add at least one [[token]] with a `name` (or a [[group]])",
        ));
    }
    if !diags.is_empty() {
        diags.sort_by_key(|d| (d.line, d.column));
        return Err(diags);
    }
    Ok(Config {
        path: map_path(map),
        state_dir,
        // `None` only without `app_secret`, which is a diagnostic returned above.
        meta: meta.expect("checked above"),
        tokens,
        groups,
        email: raw.email.map(Spanned::into_inner),
        receivers: receiver_list,
        metrics,
        delivery,
        audit,
        warnings,
    })
}

/// `state_dir`, checked: the key, else systemd's `$STATE_DIRECTORY`, else
/// `/var/lib/tokenwarden`.
fn state_dir_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    raw: Option<Spanned<String>>,
) -> PathBuf {
    // An empty `state_dir` would put the state, the token store and the outbox in whatever
    // directory the daemon was started from (issue 14, point 21).
    if let Some(d) = &raw
        && d.get_ref().trim().is_empty()
    {
        diags.push(map.at(
            d.span().start,
            "state_dir",
            "must not be empty: name the directory for state, such as \"/var/lib/tokenwarden\" (or leave the key out)",
        ));
    }
    raw.map(Spanned::into_inner)
        .filter(|d| !d.trim().is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("STATE_DIRECTORY")
                .map(|d| PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default()))
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/tokenwarden"))
}

/// `[meta]`, checked; `None` when `app_secret` is missing (reported).
fn meta_section(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    meta: Spanned<RawMeta>,
) -> Option<MetaConfig> {
    let meta_at = meta.span().start;
    let m = meta.into_inner();
    match &m.app_id {
        Some(id) => check_id(map, diags, "meta.app_id", id),
        None => diags.push(map.at(
            meta_at,
            "meta.app_id",
            "missing field: the numeric id of the Meta app that owns the tokens",
        )),
    }
    if m.app_secret.is_none() {
        diags.push(map.at(meta_at, "meta.app_secret", format!("missing field: {}", "the app secret, as { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }")));
    }
    let api_version = match &m.api_version {
        None => DEFAULT_VERSION,
        Some(v) => v.get_ref().parse().unwrap_or_else(|e: String| {
            diags.push(map.at(v.span().start, "meta.api_version", e));
            DEFAULT_VERSION
        }),
    };
    let base_url = base_url_field(map, diags, m.base_url.as_ref());
    let proxy = m.proxy.as_ref().and_then(|p| proxy_field(map, diags, p));
    let timeout = positive_duration_field(
        map,
        diags,
        "meta.timeout",
        m.timeout.as_ref(),
        Duration::from_secs(15),
    );
    let retry_delay = duration_field(
        map,
        diags,
        "meta.retry_delay",
        m.retry_delay.as_ref(),
        Duration::from_millis(500),
    );
    let attempts = match &m.attempts {
        Some(a) if *a.get_ref() == 0 || *a.get_ref() > 20 => {
            diags.push(map.at(
                a.span().start,
                "meta.attempts",
                format!("expected 1 to 20 attempts, found {}", a.get_ref()),
            ));
            1
        }
        Some(a) => *a.get_ref(),
        None => 4,
    };
    Some(MetaConfig {
        app_id: m.app_id.map(Spanned::into_inner).unwrap_or_default(),
        app_secret: m.app_secret?,
        api_version,
        base_url,
        timeout,
        attempts,
        retry_delay,
        proxy,
    })
}

/// `meta.base_url`, checked: http(s) without a query, plain http only to loopback.
fn base_url_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    raw: Option<&Spanned<String>>,
) -> reqwest::Url {
    match raw {
        None => reqwest::Url::parse(META_GRAPH_URL).expect("constant URL"),
        Some(u) => match reqwest::Url::parse(u.get_ref()) {
            Ok(url) if matches!(url.scheme(), "https" | "http") && url.query().is_none() => {
                if url.scheme() == "http" && !is_loopback(&url) {
                    diags.push(map.at(u.span().start, "meta.base_url", format!(
                        "plain http is allowed only to loopback (a sandbox); use https for {:?}", u.get_ref())));
                }
                url
            }
            _ => {
                diags.push(map.at(u.span().start, "meta.base_url", format!(
                    "expected an http(s) URL without query, such as \"{META_GRAPH_URL}\", found {:?}", u.get_ref())));
                reqwest::Url::parse(META_GRAPH_URL).expect("constant URL")
            }
        },
    }
}

/// `meta.proxy`, checked: https, or plain http on loopback; `None` when refused (reported).
fn proxy_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    p: &Spanned<String>,
) -> Option<reqwest::Url> {
    match reqwest::Url::parse(p.get_ref()) {
        Ok(url)
            if url.host().is_some()
                && (url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url))) =>
        {
            Some(url)
        }
        Ok(url) if url.scheme() == "http" => {
            diags.push(map.at(p.span().start, "meta.proxy", format!(
                "a plain http proxy would see the app secret in clear text: allowed only on loopback; use an https proxy for {:?}",
                place(&url))));
            None
        }
        _ => {
            diags.push(map.at(p.span().start, "meta.proxy", format!(
                "expected an https proxy URL such as \"https://proxy.internal:3128\" (plain http only to loopback), found {:?}",
                reqwest::Url::parse(p.get_ref()).map(|u| place(&u)).unwrap_or_else(|_| "an unreadable URL".into()))));
            None
        }
    }
}

/// `[metrics]`, checked.
fn metrics_section(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    m: RawMetrics,
) -> MetricsConfig {
    let listen = match &m.listen {
        None => "127.0.0.1:9877".parse().expect("constant address"),
        Some(l) => l.get_ref().parse().unwrap_or_else(|_| {
            diags.push(map.at(
                l.span().start,
                "metrics.listen",
                format!(
                    "expected an address such as \"127.0.0.1:9877\", found {:?}",
                    l.get_ref()
                ),
            ));
            "127.0.0.1:9877".parse().expect("constant address")
        }),
    };
    let stall_after = positive_duration_field(
        map,
        diags,
        "metrics.stall_after",
        m.stall_after.as_ref(),
        Duration::from_secs(180),
    );
    MetricsConfig {
        listen,
        stall_after,
    }
}

/// `[schedule]`, checked: the time zone and the default cron expression.
fn schedule_section(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    raw_schedule: RawSchedule,
) -> (String, String) {
    let timezone = match &raw_schedule.timezone {
        None => "UTC".to_string(),
        Some(tz) => {
            if jiff::tz::TimeZone::get(tz.get_ref()).is_err() {
                diags.push(map.at(tz.span().start, "schedule.timezone", format!(
                    "unknown time zone {:?}; use an IANA name such as \"UTC\" or \"Asia/Kolkata\"", tz.get_ref())));
            }
            tz.get_ref().clone()
        }
    };
    let default_cron = match &raw_schedule.cron {
        None => DEFAULT_CRON.to_string(),
        Some(c) => cron_field(map, diags, "schedule.cron", c),
    };
    (timezone, default_cron)
}

/// Every `[[token]]`, checked (names valid and unique).
fn token_sections(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
    raw: Vec<Spanned<RawToken>>,
    defaults: &Defaults<'_>,
) -> Vec<TokenConfig> {
    let mut names = HashSet::new();
    let mut tokens = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("token[{i}].{f}");
        let t_at = t.span().start;
        let t = t.into_inner();
        let Some(name_v) = &t.name else {
            diags.push(map.at(
                t_at,
                field("name"),
                "missing field: every [[token]] needs a unique `name`",
            ));
            continue;
        };
        let name = name_v.get_ref().clone();
        if !valid_name(&name) {
            diags.push(map.at(name_v.span().start, field("name"), format!(
                "expected 1-64 letters, digits, `-`, `_` or `.` (it names files and labels), found {name:?}")));
        } else if !names.insert(name.clone()) {
            diags.push(map.at(
                name_v.span().start,
                field("name"),
                format!("duplicate token name {name:?}: names must be unique"),
            ));
        }
        tokens.push(token_settings(
            map,
            diags,
            warnings,
            &format!("token[{i}]"),
            name,
            t,
            defaults,
            false,
        ));
    }
    tokens
}

/// Every `[[group]]`, checked (names valid and unique, `discover` present); its settings are
/// its members' template.
fn group_sections(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
    raw: Vec<Spanned<RawGroup>>,
    defaults: &Defaults<'_>,
) -> Vec<GroupConfig> {
    let mut groups = Vec::new();
    let mut group_names = HashSet::new();
    for (i, g) in raw.into_iter().enumerate() {
        let prefix = format!("group[{i}]");
        let g_at = g.span().start;
        let g = g.into_inner();
        let name = match &g.name {
            None => {
                diags.push(map.at(
                    g_at,
                    format!("{prefix}.name"),
                    "missing field: every [[group]] needs a unique `name` (it prefixes its tokens' names)",
                ));
                continue;
            }
            Some(n) => {
                let name = n.get_ref().clone();
                if !valid_name(&name) || name.len() > 32 {
                    diags.push(map.at(n.span().start, format!("{prefix}.name"), format!(
                        "expected 1-32 letters, digits, `-`, `_` or `.` (it prefixes its tokens' names), found {name:?}")));
                } else if !group_names.insert(name.clone()) {
                    diags.push(map.at(
                        n.span().start,
                        format!("{prefix}.name"),
                        format!("duplicate group name {name:?}: names must be unique"),
                    ));
                }
                name
            }
        };
        let discover = match &g.discover {
            None => {
                diags.push(map.at(g_at, format!("{prefix}.discover"), "missing field: where the group's tokens are found, such as { kind = \"aws\", name_prefix = \"whatsapp/\" }"));
                continue;
            }
            Some(d) => {
                check_discover(map, diags, &format!("{prefix}.discover"), d);
                // A business group's members are proven and renewed with their tags' ids, and
                // the file store has no tags: every member would be UNUSABLE, none renewable.
                if matches!(d.get_ref(), DiscoverConfig::File { .. })
                    && g.kind.as_ref().and_then(|k| Kind::from_word(k.get_ref()))
                        == Some(Kind::WhatsappBusiness)
                {
                    diags.push(map.at(d.span().start, format!("{prefix}.discover"), format!(
                        "a group of kind = \"whatsapp_business\" takes each customer's ids from its secret's tags `{TAG_WABA}` and `{TAG_CLIENT_BUSINESS}`, and the file store has no tags: use discover = {{ kind = \"aws\", ... }} (or a [[token]] per customer)"
                    )));
                }
                d.get_ref().clone()
            }
        };
        let spread = duration_field(
            map,
            diags,
            &format!("{prefix}.spread"),
            g.spread.as_ref(),
            DEFAULT_SPREAD,
        );
        let template = token_settings(
            map,
            diags,
            warnings,
            &prefix,
            name.clone(),
            g.into_token(),
            defaults,
            true,
        );
        groups.push(GroupConfig {
            name,
            discover,
            spread,
            template,
        });
    }
    groups
}

/// `[audit]`, checked: 1 to 4096 MB, 1 to 100 old files.
fn audit_limits(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    raw: RawAudit,
) -> crate::audit::AuditLimits {
    let default = crate::audit::AuditLimits::default();
    let max_bytes = match raw.max_size_mb {
        Some(m) if !(1..=4096).contains(m.get_ref()) => {
            diags.push(map.at(
                m.span().start,
                "audit.max_size_mb",
                format!("expected 1 to 4096 (megabytes), found {}", m.get_ref()),
            ));
            default.max_bytes
        }
        Some(m) => m.get_ref() * 1024 * 1024,
        None => default.max_bytes,
    };
    let keep = match raw.keep {
        Some(k) if !(1..=100).contains(k.get_ref()) => {
            diags.push(map.at(
                k.span().start,
                "audit.keep",
                format!("expected 1 to 100 old files, found {}", k.get_ref()),
            ));
            default.keep
        }
        Some(k) => *k.get_ref(),
        None => default.keep,
    };
    crate::audit::AuditLimits { max_bytes, keep }
}

/// What a `[[token]]` or `[[group]]` inherits from the top of the file.
struct Defaults<'a> {
    cron: &'a str,
    timezone: &'a str,
    policy: &'a Policy,
}

/// Everything of a token but its name's checks, from a `[[token]]` (or, with `group`, a
/// group's template, whose store and ids are filled per member).
#[allow(clippy::too_many_arguments)]
fn token_settings(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
    prefix: &str,
    name: String,
    mut t: RawToken,
    defaults: &Defaults<'_>,
    group: bool,
) -> TokenConfig {
    let field = |f: &str| format!("{prefix}.{f}");
    for (f, v) in [
        ("phone_number_id", &t.phone_number_id),
        ("waba_id", &t.waba_id),
    ] {
        if let Some(v) = v {
            check_id(map, diags, &field(f), v);
        }
    }
    let kind = kind_field(map, diags, &field, &t, group);
    let ad_accounts = ad_accounts_field(map, diags, &field, kind, &t);
    let mut rotation = rotation_fields(map, diags, &field, &t, kind);
    if !kind.revocable() && t.revoke_after.is_none() {
        // Meta offers no revoke for this kind: the old token lives until its own expiry.
        rotation.revoke_after = None;
    }
    let targets = targets::targets(map, diags, warnings, prefix, std::mem::take(&mut t.target));
    let store = match t.store {
        None => StoreConfig::File {
            path: None,
            key: None,
        },
        Some(s) => {
            check_store(map, diags, &field("store"), &s);
            s.into_inner()
        }
    };
    let cron = match &t.cron {
        None => defaults.cron.to_string(),
        Some(c) => cron_field(map, diags, &field("cron"), c),
    };
    let overrides = RawAlerts {
        thresholds: t.thresholds.clone(),
        repeat_interval: t.repeat_interval.clone(),
        cannot_check_after: t.cannot_check_after.clone(),
        max_age: t.max_age.clone(),
    };
    let mut policy = policy_fields(map, diags, prefix, &overrides, defaults.policy);
    if !kind.rotation_period_by_default() && t.max_age.is_none() {
        policy.max_age = None;
    }
    let app = t.app.map(|a| {
        check_id(
            map,
            diags,
            &field("app.app_id"),
            &Spanned::new(a.span(), a.get_ref().app_id.clone()),
        );
        a.into_inner()
    });
    let business = t.business.map(|b| {
        if let Some(id) = &b.get_ref().client_business_id {
            check_id(
                map,
                diags,
                &field("business.client_business_id"),
                &Spanned::new(b.span(), id.clone()),
            );
        }
        b.into_inner()
    });
    let page = t.page.map(|p| {
        check_id(
            map,
            diags,
            &field("page.id"),
            &Spanned::new(p.span(), p.get_ref().id.clone()),
        );
        p.into_inner()
    });
    TokenConfig {
        name,
        kind,
        app,
        page,
        ad_accounts,
        business,
        phone_number_id: t.phone_number_id.map(Spanned::into_inner),
        waba_id: t.waba_id.map(Spanned::into_inner),
        store,
        schedule: Schedule {
            cron,
            timezone: defaults.timezone.to_string(),
        },
        policy,
        rotation,
        targets,
    }
}

/// `kind`, checked against what the kind allows: Instagram and Threads tokens carry no
/// WhatsApp ids, cannot be minted (only refreshed or staged), and cannot be revoked (Meta
/// offers no revoke call for them), so `revoke_after` other than "never" is an error. With
/// `group` (a group's template), the per-customer ids of a business token come from each
/// member's tags instead.
fn kind_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &dyn Fn(&str) -> String,
    t: &RawToken,
    group: bool,
) -> Kind {
    let kind = match &t.kind {
        None => Kind::default(),
        Some(k) => match Kind::from_word(k.get_ref()) {
            Some(kind) => kind,
            None => {
                let known: Vec<String> = crate::meta::kind::ALL
                    .iter()
                    .map(|k| format!("{:?}", k.word()))
                    .collect();
                diags.push(map.at(
                    k.span().start,
                    field("kind"),
                    format!(
                        "expected one of {}, found {:?}",
                        known.join(", "),
                        k.get_ref()
                    ),
                ));
                return Kind::default();
            }
        },
    };
    if kind != Kind::Page
        && let Some(p) = &t.page
    {
        diags.push(map.at(
            p.span().start,
            field("page"),
            "a `page` table is for kind = \"page\"",
        ));
    }
    if kind == Kind::Page {
        if let Some(a) = &t.app {
            diags.push(map.at(a.span().start, field("app"), "an `app` table is for kind = \"instagram\" or \"threads\"; a Page token uses [meta]'s app"));
        }
        match &t.page {
            None => diags.push(map.at(t.kind.as_ref().map_or(0, |k| k.span().start), field("page"), "missing field: a token of kind = \"page\" needs page = { id = \"PAGE_ID\" } (add messenger = true and user_token = { env = \"NAME\" } as needed)")),
            Some(p) if t.source.as_ref().is_some_and(|s| s.get_ref() == "refresh") && p.get_ref().user_token.is_none() => {
                diags.push(map.at(p.span().start, field("page.user_token"), "source = \"refresh\" takes a new Page token from a long-lived user token: add user_token = { env = \"NAME\" } to the `page` table"));
            }
            Some(_) => {}
        }
    }
    if kind != Kind::WhatsappBusiness
        && let Some(b) = &t.business
    {
        diags.push(map.at(
            b.span().start,
            field("business"),
            "a `business` table is for kind = \"whatsapp_business\"",
        ));
    }
    if kind == Kind::WhatsappBusiness && group {
        // Each member is one customer: its WABA and business ids are its secret's tags. One
        // customer's business id on the group would fetch that customer's token into the
        // secret of every member.
        if let Some(b) = t
            .business
            .as_ref()
            .filter(|b| b.get_ref().client_business_id.is_some())
        {
            diags.push(map.at(b.span().start, field("business.client_business_id"), format!(
                "each customer of a group has its own business id: tag each member's secret with `{}` (and `{}`), and keep only partner_token here",
                TAG_CLIENT_BUSINESS,
                TAG_WABA
            )));
        }
        if t.source.as_ref().is_some_and(|s| s.get_ref() == "refresh") && t.business.is_none() {
            diags.push(map.at(t.kind.as_ref().map_or(0, |k| k.span().start), field("business"), format!(
                "source = \"refresh\" fetches each customer's business token again with the Tech Provider's own token: add business = {{ partner_token = {{ env = \"NAME\" }} }} (each member's business id is its secret's tag `{}`)",
                TAG_CLIENT_BUSINESS
            )));
        }
    } else if kind == Kind::WhatsappBusiness {
        if let Some(b) = t
            .business
            .as_ref()
            .filter(|b| b.get_ref().client_business_id.is_none())
        {
            diags.push(map.at(b.span().start, field("business.client_business_id"), "missing field: the customer's business id (from Embedded Signup) the business token is fetched again for; add client_business_id = \"...\" to the `business` table"));
        }
        if t.waba_id.is_none() {
            diags.push(map.at(t.kind.as_ref().map_or(0, |k| k.span().start), field("waba_id"), "missing field: a token of kind = \"whatsapp_business\" is proven by reading the customer's WABA's phone numbers; set waba_id"));
        }
        if t.source.as_ref().is_some_and(|s| s.get_ref() == "refresh") && t.business.is_none() {
            diags.push(map.at(t.kind.as_ref().map_or(0, |k| k.span().start), field("business"), "source = \"refresh\" fetches the customer's business token again: add business = { client_business_id = \"...\", partner_token = { env = \"NAME\" } }"));
        }
    }
    if kind == Kind::Whatsapp {
        if let Some(a) = &t.app {
            diags.push(map.at(a.span().start, field("app"), "an `app` table is for kind = \"instagram\" or \"threads\" (their own app id and secret); a WhatsApp token uses [meta]'s app"));
        }
        return kind;
    }
    for (f, v) in [
        ("phone_number_id", &t.phone_number_id),
        ("waba_id", &t.waba_id),
    ] {
        if let Some(v) = v.as_ref().filter(|_| !kind.whatsapp_ids()) {
            diags.push(map.at(
                v.span().start,
                field(f),
                format!("a WhatsApp id has no meaning on a token of kind \"{kind}\"; remove it"),
            ));
        }
    }
    if let Some(s) = t
        .source
        .as_ref()
        .filter(|s| s.get_ref() == "mint" && !kind.graph_renewal())
    {
        diags.push(map.at(s.span().start, field("source"), format!(
            "a token of kind \"{kind}\" cannot be minted; use source = \"refresh\" ({} on {}) or \"staged\"",
            kind.refresh_grant().unwrap_or_default(), kind.host())));
    }
    if let Some(v) = t
        .revoke_after
        .as_ref()
        .filter(|v| v.get_ref() != "never" && !kind.revocable())
    {
        diags.push(map.at(v.span().start, field("revoke_after"), format!(
            "Meta offers no revoke for tokens of kind \"{kind}\": the old token stays valid until its own expiry; remove `revoke_after` (or set \"never\")")));
    }
    kind
}

/// `ad_accounts`, only on `marketing` tokens: ad account ids, with or without `act_`, kept as
/// digits.
fn ad_accounts_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &dyn Fn(&str) -> String,
    kind: Kind,
    t: &RawToken,
) -> Vec<String> {
    let Some(list) = &t.ad_accounts else {
        return Vec::new();
    };
    if kind != Kind::Marketing {
        diags.push(map.at(
            list.span().start,
            field("ad_accounts"),
            "`ad_accounts` is for kind = \"marketing\"",
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for a in list.get_ref() {
        let id = a.strip_prefix("act_").unwrap_or(a);
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            diags.push(map.at(
                list.span().start,
                field("ad_accounts"),
                format!("expected ad account ids such as \"act_1234567890\", found {a:?}"),
            ));
        } else {
            out.push(id.to_string());
        }
    }
    out
}

fn map_path(map: &SourceMap<'_>) -> PathBuf {
    map.at(0, "", "").file
}

/// Meta ids are decimal strings. The usual mistakes: an empty value, the display phone number
/// (`+1 555...`), or a value with spaces or dashes.
fn check_id(map: &SourceMap<'_>, diags: &mut Vec<Diagnostic>, field: &str, v: &Spanned<String>) {
    let s = v.get_ref();
    let problem = if s.is_empty() {
        Some("must not be empty".to_string())
    } else if looks_secret(s) {
        // `config check` runs in the unit's `ExecStartPre`: quoting the value would put a
        // token pasted into the wrong field into the journal.
        Some(format!(
            "expected a numeric Meta id (digits only), found {}: this looks like an access token or secret pasted into the wrong field; put the token in its store and the id here",
            quote_unsafe(s)
        ))
    } else if s.starts_with('+') {
        Some(format!(
            "found {s:?}, which looks like a display phone number; use the numeric id Meta shows under WhatsApp > API Setup (`tokenwarden doctor` finds it)"
        ))
    } else if !s.bytes().all(|b| b.is_ascii_digit()) {
        Some(format!(
            "expected a numeric Meta id (digits only), found {s:?}"
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        diags.push(map.at(v.span().start, field, p));
    }
}

/// Whether a value that should be a Meta id looks like a token or secret instead: Meta ids
/// are at most 20 digits, while tokens start with `EAA` and run to 100+ characters, app
/// secrets are 32 hex characters and app tokens are `digits|secret`.
fn looks_secret(s: &str) -> bool {
    !s.bytes().all(|b| b.is_ascii_digit())
        && (s.len() >= 24 || s.starts_with("EAA") || s.contains('|'))
}

/// How an error names a value that may be a secret: its length and fingerprint, never the
/// value.
fn quote_unsafe(s: &str) -> String {
    format!(
        "a value of {} characters (fingerprint {})",
        s.chars().count(),
        crate::secret::Fingerprint::of(s)
    )
}

fn check_store(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &str,
    s: &Spanned<StoreConfig>,
) {
    let at = s.span().start;
    match s.get_ref() {
        StoreConfig::File { key: Some(k), .. } if k.is_empty() => {
            diags.push(map.at(at, format!("{field}.key"), "must not be empty"));
        }
        StoreConfig::Aws {
            secret_id,
            endpoint,
            region,
            json_key,
        } => {
            if secret_id.is_empty() {
                diags.push(map.at(at, format!("{field}.secret_id"), "must not be empty"));
            }
            if let Some(e) = endpoint {
                match reqwest::Url::parse(e) {
                    Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => {
                    }
                    _ => diags.push(map.at(
                        at,
                        format!("{field}.endpoint"),
                        format!("expected an https URL (http only to loopback), found {e:?}"),
                    )),
                }
            }
            if region.as_deref() == Some("") {
                diags.push(map.at(at, format!("{field}.region"), "must not be empty"));
            }
            if json_key.as_deref() == Some("") {
                diags.push(map.at(at, format!("{field}.json_key"), "must not be empty"));
            }
        }
        StoreConfig::File { .. } => {}
    }
}

fn check_discover(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &str,
    d: &Spanned<DiscoverConfig>,
) {
    let at = d.span().start;
    let mut problem = |f: &str, p: &str| diags.push(map.at(at, format!("{field}.{f}"), p));
    match d.get_ref() {
        DiscoverConfig::File { key_prefix, .. } => {
            if key_prefix.is_empty() {
                problem(
                    "key_prefix",
                    "must not be empty (it would take every entry of the file)",
                );
            }
        }
        DiscoverConfig::Aws {
            name_prefix,
            tag_key,
            tag_value,
            region,
            endpoint,
            json_key,
        } => {
            if name_prefix.as_deref().unwrap_or("").is_empty()
                && tag_key.as_deref().unwrap_or("").is_empty()
            {
                problem(
                    "name_prefix",
                    "set `name_prefix`, `tag_key` or both: without either the group would take every secret of the account",
                );
            }
            if tag_value.is_some() && tag_key.is_none() {
                problem("tag_value", "needs `tag_key`");
            }
            for (f, v) in [
                ("name_prefix", name_prefix),
                ("tag_key", tag_key),
                ("tag_value", tag_value),
                ("region", region),
                ("json_key", json_key),
            ] {
                if v.as_deref() == Some("") {
                    problem(f, "must not be empty");
                }
            }
            if let Some(e) = endpoint
                && !matches!(reqwest::Url::parse(e), Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)))
            {
                problem(
                    "endpoint",
                    &format!("expected an https URL (http only to loopback), found {e:?}"),
                );
            }
        }
    }
}

fn duration_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &str,
    v: Option<&Spanned<String>>,
    default: Duration,
) -> Duration {
    match v {
        None => default,
        Some(v) => parse_duration(v.get_ref()).unwrap_or_else(|| {
            diags.push(map.at(v.span().start, field, format!(
                "expected a duration such as \"500ms\", \"30s\", \"5m\", \"24h\" or \"14d\", found {:?}", v.get_ref())));
            default
        }),
    }
}

/// [`duration_field`] for a timeout or deadline, where zero would make every attempt fail
/// at once (a `0s` Graph timeout turns every check into "cannot check").
fn positive_duration_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &str,
    v: Option<&Spanned<String>>,
    default: Duration,
) -> Duration {
    let d = duration_field(map, diags, field, v, default);
    match v {
        Some(v) if d.is_zero() => {
            diags.push(map.at(
                v.span().start,
                field,
                format!(
                    "expected a positive duration such as \"15s\", found {:?}: zero would end every attempt at once",
                    v.get_ref()
                ),
            ));
            default
        }
        _ => d,
    }
}

/// Normalises and checks a cron expression: five fields (the familiar form) gain a leading
/// `0` seconds field; six or seven fields are taken as they are.
fn cron_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &str,
    v: &Spanned<String>,
) -> String {
    let fields = v.get_ref().split_whitespace().count();
    let expr = match fields {
        5 => format!("0 {}", v.get_ref().trim()),
        6 | 7 => v.get_ref().trim().to_string(),
        _ => {
            diags.push(map.at(v.span().start, field, format!(
                "expected a cron expression of 5 fields (min hour day month weekday) or 6 with seconds first, found {:?}", v.get_ref())));
            return DEFAULT_CRON.to_string();
        }
    };
    match tokio_cron_scheduler::Job::new_async(expr.as_str(), |_, _| Box::pin(async {})) {
        Err(_) => {
            diags.push(map.at(
                v.span().start,
                field,
                format!("invalid cron expression {:?}", v.get_ref()),
            ));
            return DEFAULT_CRON.to_string();
        }
        // The scheduler accepts a date that never comes (`0 0 0 30 2 *`, the 30th of
        // February) and then never fires: the token would never be checked. A job with no next
        // occurrence has a next tick of 0.
        Ok(job) if job.clone().job_data().is_ok_and(|d| d.next_tick == 0) => {
            diags.push(map.at(
                v.span().start,
                field,
                format!(
                    "the cron expression {:?} never fires (no such date ever comes); checks would never run",
                    v.get_ref()
                ),
            ));
            return DEFAULT_CRON.to_string();
        }
        Ok(_) => {}
    }
    expr
}

/// Reads a token's rotation settings: `source`, `mint`, `rotate_before`, `revoke_after`.
fn rotation_fields(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: &dyn Fn(&str) -> String,
    t: &RawToken,
    kind: Kind,
) -> RotationConfig {
    let mut r = RotationConfig::default();
    let word = t
        .source
        .as_ref()
        .map(|s| (s.span().start, s.get_ref().as_str()));
    match (word, &t.mint) {
        (None | Some((_, "staged")), None) => {}
        (Some((_, "refresh")), None) => r.source = Source::Refresh,
        (Some((_, "mint")), Some(m)) => {
            let at = m.span().start;
            let m = m.get_ref();
            let system_user_id = match &m.system_user_id {
                Some(id) => {
                    check_id(map, diags, &field("mint.system_user_id"), id);
                    id.get_ref().clone()
                }
                None => {
                    diags.push(map.at(at, field("mint.system_user_id"), "missing field: the id of the system user the token acts as (Business Settings > Users > System users)"));
                    String::new()
                }
            };
            let expiring = match m.lifetime.as_ref().map(|l| (l.span().start, l.get_ref().as_str())) {
                None | Some((_, "60d")) => true,
                Some((_, "never")) => false,
                Some((at, other)) => {
                    diags.push(map.at(at, field("mint.lifetime"), format!("expected \"60d\" (Meta's recommendation) or \"never\" (for consumers that accept only non-expiring tokens), found {other:?}")));
                    true
                }
            };
            let scopes = match &m.scopes {
                None => Vec::new(),
                Some(s) => {
                    let list = s.get_ref();
                    let bad = list.iter().find(|x| {
                        x.is_empty() || !x.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    });
                    let missing: Vec<&str> = crate::meta::WHATSAPP_SCOPES
                        .into_iter()
                        .filter(|w| !list.iter().any(|x| x == w))
                        .collect();
                    if let Some(b) = bad {
                        diags.push(map.at(s.span().start, field("mint.scopes"), format!("expected permission names such as \"whatsapp_business_messaging\", found {b:?}")));
                    } else if kind == Kind::Marketing
                        && !list.iter().any(|x| crate::meta::kind::ADS_SCOPES.contains(&x.as_str()))
                    {
                        diags.push(map.at(s.span().start, field("mint.scopes"), "a Marketing API token needs ads_read or ads_management; add one, or leave `scopes` out to keep the current token's"));
                    } else if !missing.is_empty() && kind == Kind::Whatsapp {
                        diags.push(map.at(s.span().start, field("mint.scopes"), format!("a WhatsApp token needs {}; add them, or leave `scopes` out to keep the current token's", missing.join(" and "))));
                    }
                    list.clone()
                }
            };
            match &m.admin_token {
                Some(admin_token) => {
                    r.source = Source::Mint(MintConfig {
                        system_user_id,
                        admin_token: admin_token.clone(),
                        expiring,
                        scopes,
                    });
                }
                None => diags.push(map.at(at, field("mint.admin_token"), "missing field: a token allowed to mint for the system user, as { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }")),
            }
        }
        (Some((at, "mint")), None) => diags.push(map.at(at, field("mint"), "source = \"mint\" needs a `mint = { system_user_id = \"...\", admin_token = { env = \"NAME\" } }` table")),
        (Some((_, "staged" | "refresh")), Some(m)) | (None, Some(m)) => diags.push(map.at(
            m.span().start,
            field("mint"),
            "a `mint` table is only read with source = \"mint\"; set the source or remove the table",
        )),
        (Some((at, other)), _) => diags.push(map.at(at, field("source"), format!(
            "expected \"staged\" (a person stages the next token), \"refresh\" (Meta's refresh API, 60-day tokens) or \"mint\" (a new system-user token), found {other:?}"))),
    }
    if let Some(v) = &t.rotate_before {
        match parse_duration(v.get_ref()) {
            Some(d) if !d.is_zero() => r.rotate_before = Some(d),
            _ => diags.push(map.at(
                v.span().start,
                field("rotate_before"),
                format!(
                    "expected a positive duration such as \"20d\", found {:?}",
                    v.get_ref()
                ),
            )),
        }
    }
    if let Some(v) = &t.revoke_after {
        match (v.get_ref().as_str(), parse_duration(v.get_ref())) {
            ("never", _) => r.revoke_after = None,
            (_, Some(d)) => r.revoke_after = Some(d),
            _ => diags.push(map.at(v.span().start, field("revoke_after"), format!(
                "expected a duration such as \"24h\" (\"0s\" revokes at once) or \"never\", found {:?}", v.get_ref()))),
        }
    }
    r
}

/// Reads alert settings over `base` (the `[alerts]` section, or the defaults).
fn policy_fields(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    prefix: &str,
    raw: &RawAlerts,
    base: &Policy,
) -> Policy {
    let mut p = base.clone();
    if let Some(list) = &raw.thresholds {
        let mut parsed = Vec::new();
        for t in list.get_ref() {
            match parse_duration(t) {
                Some(d) if !d.is_zero() => parsed.push(d),
                _ => diags.push(map.at(
                    list.span().start,
                    format!("{prefix}.thresholds"),
                    format!(
                        "expected durations such as [\"14d\", \"7d\", \"3d\", \"1d\"], found {t:?}"
                    ),
                )),
            }
        }
        parsed.sort_unstable_by(|a, b| b.cmp(a));
        parsed.dedup();
        if parsed.is_empty() && list.get_ref().is_empty() {
            diags.push(map.at(
                list.span().start,
                format!("{prefix}.thresholds"),
                "needs at least one threshold",
            ));
        }
        if !parsed.is_empty() {
            p.thresholds = parsed;
        }
    }
    let mut dur = |field: &str, v: &Option<Spanned<String>>, target: &mut Duration| {
        if let Some(v) = v {
            match parse_duration(v.get_ref()) {
                Some(d) if !d.is_zero() => *target = d,
                _ => diags.push(map.at(
                    v.span().start,
                    format!("{prefix}.{field}"),
                    format!(
                        "expected a positive duration such as \"24h\", found {:?}",
                        v.get_ref()
                    ),
                )),
            }
        }
    };
    dur(
        "repeat_interval",
        &raw.repeat_interval,
        &mut p.repeat_interval,
    );
    dur(
        "cannot_check_after",
        &raw.cannot_check_after,
        &mut p.cannot_check_after,
    );
    if let Some(v) = &raw.max_age {
        if v.get_ref() == "never" {
            p.max_age = None;
        } else {
            let mut d = p.max_age.unwrap_or_default();
            dur("max_age", &raw.max_age, &mut d);
            p.max_age = Some(d);
        }
    }
    p
}

/// Parses `500ms`, `30s`, `5m`, `24h`, `14d` (one number, one unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.')
}

/// A URL as errors show it: scheme, host and port, never the user, password, path or query
/// (a proxy URL may carry credentials).
fn place(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", url.scheme()),
        (Some(h), None) => format!("{}://{h}", url.scheme()),
        (None, _) => format!("{}:", url.scheme()),
    }
}

/// Whether `url` points at this machine (plain http is allowed only there).
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Config {
    /// The token called `name`.
    pub fn token(&self, name: &str) -> Option<&TokenConfig> {
        self.tokens.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[meta]
app_id = "634974688087057"
app_secret = { env = "META_APP_SECRET" }

[[token]]
name = "billbytekot-prod"
phone_number_id = "106540352242922"
waba_id = "102290129340398"

[[token]]
name = "billbytekot-staging"
store = { kind = "aws", secret_id = "staging/whatsapp", region = "ap-south-1", json_key = "WHATSAPP_ACCESS_TOKEN" }
"#;

    fn errors(text: &str) -> Vec<Diagnostic> {
        parse(Path::new("t.toml"), text).expect_err("config should be rejected")
    }

    /// A Page token and a business token have no rotation period unless the token (or its
    /// group) sets one: they never expire and only a person replaces one that works. Other
    /// kinds keep `[alerts]`' period.
    #[test]
    fn page_and_business_tokens_have_no_rotation_period_unless_set() {
        let day = Duration::from_secs(86_400);
        let text = format!(
            "{GOOD}\n[alerts]\nmax_age = \"50d\"\n\n[[token]]\nname = \"page\"\nkind = \"page\"\npage = {{ id = \"1\" }}\n\n[[token]]\nname = \"biz\"\nkind = \"whatsapp_business\"\nwaba_id = \"2\"\n\n[[token]]\nname = \"page-30\"\nkind = \"page\"\npage = {{ id = \"1\" }}\nmax_age = \"30d\"\n\n[[token]]\nname = \"ads\"\nkind = \"marketing\"\n\n[[group]]\nname = \"pages\"\nkind = \"page\"\npage = {{ id = \"1\" }}\nmax_age = \"90d\"\ndiscover = {{ kind = \"file\", key_prefix = \"c-\" }}\n"
        );
        let c = parse(Path::new("t.toml"), &text).unwrap();
        let age = |n: &str| c.token(n).unwrap().policy.max_age;
        assert_eq!(age("page"), None);
        assert_eq!(age("biz"), None);
        assert_eq!(age("page-30"), Some(day * 30));
        assert_eq!(age("ads"), Some(day * 50));
        assert_eq!(age("billbytekot-prod"), Some(day * 50));
        assert_eq!(c.groups[0].template.policy.max_age, Some(day * 90));
    }

    #[test]
    fn kind_defaults_to_whatsapp_and_each_kind_keeps_to_what_it_allows() {
        let c = parse(Path::new("t.toml"), GOOD).unwrap();
        assert!(c.tokens.iter().all(|t| t.kind == Kind::Whatsapp));
        let ig = format!(
            "{GOOD}\n[[token]]\nname = \"shop-ig\"\nkind = \"instagram\"\nsource = \"refresh\"\n"
        );
        let c = parse(Path::new("t.toml"), &ig).unwrap();
        let t = c.token("shop-ig").unwrap();
        assert_eq!(t.kind, Kind::Instagram);
        assert_eq!(t.rotation.source, Source::Refresh);
        assert_eq!(
            t.rotation.revoke_after, None,
            "Meta offers no revoke for Instagram tokens"
        );
        let e = errors(&format!(
            "{GOOD}\n[[token]]\nname = \"x\"\nkind = \"ads\"\n"
        ));
        assert!(e[0].to_string().contains("token[2].kind"), "{e:?}");
        assert!(
            e[0].to_string()
                .contains("\"whatsapp\", \"instagram\", \"threads\""),
            "{e:?}"
        );
        let e = errors(&format!(
            "{GOOD}\n[[token]]\nname = \"x\"\nkind = \"threads\"\nwaba_id = \"1\"\nsource = \"mint\"\nmint = {{ system_user_id = \"1\", admin_token = {{ env = \"A\" }} }}\nrevoke_after = \"1h\"\n"
        ));
        let all: Vec<String> = e.iter().map(ToString::to_string).collect();
        for f in [
            "token[2].waba_id",
            "token[2].source",
            "token[2].revoke_after",
        ] {
            assert!(all.iter().any(|d| d.contains(f)), "{f}: {all:?}");
        }
        // A group's members inherit its kind.
        let group = format!(
            "{GOOD}\n[[group]]\nname = \"shops\"\nkind = \"threads\"\nsource = \"refresh\"\ndiscover = {{ kind = \"file\", key_prefix = \"th-\" }}\n"
        );
        let c = parse(Path::new("t.toml"), &group).unwrap();
        assert_eq!(c.groups[0].template.kind, Kind::Threads);
        assert_eq!(c.groups[0].template.rotation.revoke_after, None);
        // The product's own app: only on Instagram and Threads tokens, its id checked, its
        // secret resolved by `config check`.
        let with_app = format!(
            "{GOOD}\n[[token]]\nname = \"ig\"\nkind = \"instagram\"\napp = {{ app_id = \"990011223344556\", app_secret = {{ env = \"IG_SECRET\" }} }}\n"
        );
        let c = parse(Path::new("t.toml"), &with_app).unwrap();
        assert_eq!(
            c.token("ig").unwrap().app.as_ref().unwrap().app_id,
            "990011223344556"
        );
        assert!(
            c.secret_fields()
                .iter()
                .any(|f| f.field == "token[2].app.app_secret")
        );
        let e = errors(&format!(
            "{GOOD}\n[[token]]\nname = \"x\"\napp = {{ app_id = \"12x\", app_secret = {{ env = \"S\" }} }}\n"
        ));
        let all: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|d| d.contains("token[2].app.app_id")),
            "{all:?}"
        );
        assert!(all.iter().any(|d| d.contains("`token[2].app`")), "{all:?}");
        // A Page token needs its Page; its user token is a secret reference.
        let e = errors(&format!(
            "{GOOD}\n[[token]]\nname = \"p\"\nkind = \"page\"\n"
        ));
        assert!(
            e.iter().any(|d| d.to_string().contains("token[2].page")),
            "{e:?}"
        );
        let page = format!(
            "{GOOD}\n[[token]]\nname = \"p\"\nkind = \"page\"\nsource = \"refresh\"\npage = {{ id = \"110200300400500\", user_token = {{ env = \"U\" }} }}\n"
        );
        let c = parse(Path::new("t.toml"), &page).unwrap();
        assert!(
            c.secret_fields()
                .iter()
                .any(|f| f.field == "token[2].page.user_token")
        );
    }

    #[test]
    fn meta_proxy_is_https_or_a_loopback_http_proxy() {
        for ok in [
            "https://proxy.internal:3128",
            "http://127.0.0.1:3128",
            "http://localhost:8080",
        ] {
            let text = GOOD.replacen("[meta]\n", &format!("[meta]\nproxy = \"{ok}\"\n"), 1);
            let c = parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
            assert_eq!(
                c.meta
                    .proxy
                    .as_ref()
                    .map(|u| u.host_str().unwrap().to_string()),
                Some(
                    reqwest::Url::parse(ok)
                        .unwrap()
                        .host_str()
                        .unwrap()
                        .to_string()
                )
            );
        }
        // A refused proxy URL is quoted without its credentials.
        let text = GOOD.replacen(
            "[meta]\n",
            "[meta]\nproxy = \"http://user:pw-canary@proxy.example:3128/x\"\n",
            1,
        );
        let e = format!("{:?}", parse(Path::new("t.toml"), &text).unwrap_err());
        assert!(e.contains("http://proxy.example:3128"), "{e}");
        assert!(!e.contains("pw-canary"), "{e}");
    }

    #[test]
    fn audit_limits_default_parse_and_are_bounded() {
        let c = parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.audit, crate::audit::AuditLimits::default());
        let c = parse(
            Path::new("t.toml"),
            &format!("[audit]\nmax_size_mb = 2\nkeep = 9\n{GOOD}"),
        )
        .unwrap();
        assert_eq!(c.audit.max_bytes, 2 * 1024 * 1024);
        assert_eq!(c.audit.keep, 9);
        let e = errors(&format!("[audit]\nmax_size_mb = 0\nkeep = 0\n{GOOD}"));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_eq!((e[0].field.as_str(), e[0].line), ("audit.max_size_mb", 2));
        assert_eq!((e[1].field.as_str(), e[1].line), ("audit.keep", 3));
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = parse(Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.meta.api_version, DEFAULT_VERSION);
        assert_eq!(c.meta.base_url.as_str(), "https://graph.facebook.com/");
        assert_eq!(c.meta.proxy, None, "no proxy unless configured");
        assert_eq!(
            c.tokens[0].store,
            StoreConfig::File {
                path: None,
                key: None
            }
        );
        assert!(
            matches!(&c.tokens[1].store, StoreConfig::Aws { json_key: Some(k), .. } if k == "WHATSAPP_ACCESS_TOKEN")
        );
        assert_eq!(c.meta.app_secret, SecretRef::Env("META_APP_SECRET".into()));
    }

    /// One table row per error path: (config text, field, words the message must contain, line).
    #[test]
    fn every_error_path_names_line_field_and_expectation() {
        let head = "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n";
        let cases: &[(&str, &str, &str, usize)] = &[
            (
                "[meta]\napp_id = \"1\"\napp_secret = \"hunter2\"\n[[token]]\nname = \"a\"\n",
                "meta.app_secret",
                "never written inline",
                3,
            ),
            (
                "[meta]\napp_id = \"1\"\napp_secret = { vault = \"x\" }\n[[token]]\nname = \"a\"\n",
                "meta.app_secret",
                "unknown field `vault`",
                3,
            ),
            (
                "[meta]\napp_id = \"1\"\napp_secret = { env = \"A\", file = \"/b\" }\n[[token]]\nname = \"a\"\n",
                "meta.app_secret",
                "exactly one",
                3,
            ),
            (
                "[meta]\napp_id = \"\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"a\"\n",
                "meta.app_id",
                "must not be empty",
                2,
            ),
            (
                "[meta]\napp_id = \"abc\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"a\"\n",
                "meta.app_id",
                "digits only",
                2,
            ),
            (
                &format!("{head}api_version = \"v25\"\n[[token]]\nname = \"a\"\n"),
                "meta.api_version",
                "such as \"v25.0\"",
                4,
            ),
            (
                &format!("{head}base_url = \"ftp://x\"\n[[token]]\nname = \"a\"\n"),
                "meta.base_url",
                "http(s) URL",
                4,
            ),
            (
                &format!("{head}base_url = \"http://example.com\"\n[[token]]\nname = \"a\"\n"),
                "meta.base_url",
                "only to loopback",
                4,
            ),
            (
                &format!(
                    "{head}proxy = \"http://user:pw-canary@proxy.example:3128\"\n[[token]]\nname = \"a\"\n"
                ),
                "meta.proxy",
                "allowed only on loopback",
                4,
            ),
            (
                &format!(
                    "{head}proxy = \"socks5://proxy.example:1080\"\n[[token]]\nname = \"a\"\n"
                ),
                "meta.proxy",
                "expected an https proxy URL",
                4,
            ),
            (
                &format!("{head}timeout = \"10 parsecs\"\n[[token]]\nname = \"a\"\n"),
                "meta.timeout",
                "a duration",
                4,
            ),
            (
                &format!("{head}attempts = 0\n[[token]]\nname = \"a\"\n"),
                "meta.attempts",
                "1 to 20",
                4,
            ),
            (
                &format!("{head}colour = \"red\"\n[[token]]\nname = \"a\"\n"),
                "meta.colour",
                "unknown field `colour`",
                4,
            ),
            (
                &format!("{head}[[token]]\nname = \"a\"\nphone_number_id = \"+1 555 0100\"\n"),
                "token[0].phone_number_id",
                "display phone number",
                6,
            ),
            (
                &format!("{head}[[token]]\nname = \"a\"\nwaba_id = \"12-34\"\n"),
                "token[0].waba_id",
                "digits only",
                6,
            ),
            (
                &format!("{head}[[token]]\nname = \"a\"\nphone_number_id = \"\"\n"),
                "token[0].phone_number_id",
                "must not be empty",
                6,
            ),
            (
                &format!("{head}[[token]]\nname = \"a\"\n[[token]]\nname = \"a\"\n"),
                "token[1].name",
                "duplicate",
                7,
            ),
            (
                &format!("{head}[[token]]\nname = \"a b\"\n"),
                "token[0].name",
                "letters, digits",
                5,
            ),
            (
                &format!("{head}[[token]]\nname = \"a\"\nphone = \"1\"\n"),
                "token[0].phone",
                "unknown field `phone`",
                6,
            ),
            (
                &format!("{head}[[token]]\nname = \"a\"\nstore = {{ kind = \"vault\" }}\n"),
                "token[0].store.kind",
                "unknown variant `vault`",
                6,
            ),
            (
                &format!(
                    "{head}[[token]]\nname = \"a\"\nstore = {{ kind = \"aws\", secret_id = \"\", endpoint = \"http://10.1.2.3\" }}\n"
                ),
                "token[0].store.secret_id",
                "must not be empty",
                6,
            ),
            (
                &format!(
                    "{head}[[token]]\nname = \"a\"\nstore = {{ kind = \"aws\", secret_id = \"x\", endpoint = \"http://10.1.2.3\" }}\n"
                ),
                "token[0].store.endpoint",
                "https",
                6,
            ),
            (
                &format!("{head}[[token]]\nphone_number_id = \"1\"\n"),
                "token[0].name",
                "missing field",
                4,
            ),
            (
                "[meta]\napp_secret = { env = \"S\" }\n[[token]]\nname = \"a\"\n",
                "meta.app_id",
                "missing field",
                1,
            ),
            (
                "[[token]]\nname = \"a\"\n",
                "meta",
                "missing table [meta]",
                1,
            ),
            (head, "token", "no token configured", 1),
            ("[meta\n", "", "", 1),
        ];
        for (text, field, words, line) in cases {
            let errs = errors(text);
            let hit = errs
                .iter()
                .find(|d| d.field == *field && d.message.contains(words));
            let d = hit.unwrap_or_else(|| {
                panic!("no `{field}` error containing {words:?} for:\n{text}\ngot: {errs:#?}")
            });
            assert_eq!(d.line, *line, "line of {d}");
            assert_eq!(d.file, Path::new("t.toml"));
            assert!(d.column >= 1);
        }
    }

    /// Issue 14, point 21: settings that parse but would break every check.
    #[test]
    fn settings_that_would_break_checking_are_refused() {
        let head = "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n";
        let tok = "[[token]]\nname = \"a\"\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("{head}timeout = \"0s\"\n{tok}"),
                "meta.timeout",
                "positive",
            ),
            (
                format!("{head}timeout = \"0ms\"\n{tok}"),
                "meta.timeout",
                "positive",
            ),
            (
                format!("{head}[metrics]\nstall_after = \"0s\"\n{tok}"),
                "metrics.stall_after",
                "positive",
            ),
            (
                format!("{head}[schedule]\ncron = \"0 0 0 30 2 *\"\n{tok}"),
                "schedule.cron",
                "never fires",
            ),
            (
                format!("{head}{tok}cron = \"0 0 31 4 *\"\n"),
                "token[0].cron",
                "never fires",
            ),
            (
                format!("state_dir = \"\"\n{head}{tok}"),
                "state_dir",
                "must not be empty",
            ),
            (
                format!(
                    "{head}{tok}[[token.target]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"https://pos.example.com/h\"\nsecret = {{ env = \"W\" }}\nheader = \"X-Sig\\r\\nX-Evil: 1\"\n"
                ),
                "token[0].target[0].header",
                "header name",
            ),
            (
                format!(
                    "{head}{tok}[[token.target]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"https://pos.example.com/h\"\nsecret = {{ env = \"W\" }}\nheader = \"X-Sig\\n\"\n"
                ),
                "token[0].target[0].header",
                "header name",
            ),
        ];
        for (text, field, words) in &cases {
            let errs = errors(text);
            assert!(
                errs.iter()
                    .any(|d| d.field == *field && d.message.contains(words)),
                "no `{field}` error containing {words:?} for:\n{text}\ngot: {errs:#?}"
            );
        }
        // What is still fine: a cron that fires only on leap days, a non-zero timeout, the
        // default state directory, a plain header name.
        for ok in [
            format!("{head}timeout = \"1s\"\n[schedule]\ncron = \"0 0 29 2 *\"\n{tok}"),
            format!(
                "{head}{tok}[[token.target]]\nname = \"w\"\nkind = \"webhook\"\nurl = \"https://pos.example.com/h\"\nsecret = {{ env = \"W\" }}\nheader = \"X-Sig\"\n"
            ),
        ] {
            let parsed = parse(Path::new("t.toml"), &ok);
            assert!(parsed.is_ok(), "{ok}: {:#?}", parsed.err());
        }
    }

    /// Issue 14, point 8: `config check` runs in `ExecStartPre`, so its errors reach the
    /// journal; a token pasted into an id field is named by fingerprint, never quoted.
    #[test]
    fn a_token_pasted_into_an_id_field_is_named_by_fingerprint_only() {
        let token = "EAAGm0PX4ZCpsBAKZCanaryTokenValue1234567890abcdefZZ";
        let secret32 = "0123456789abcdef0123456789abcdef";
        let app_token = "634974688087057|s3cr3t";
        let fields = [
            ("phone_number_id", token),
            ("waba_id", secret32),
            ("phone_number_id", app_token),
        ];
        for (f, value) in fields {
            let text = format!(
                "[meta]\napp_id = \"1\"\napp_secret = {{ env = \"S\" }}\n[[token]]\nname = \"a\"\n{f} = \"{value}\"\n"
            );
            let errs = errors(&text);
            let d = errs
                .iter()
                .find(|d| d.field == format!("token[0].{f}"))
                .unwrap_or_else(|| panic!("{errs:#?}"));
            let shown = d.to_string();
            assert!(!shown.contains(value), "{shown}");
            assert!(!shown.contains(&value[..12]), "{shown}");
            assert!(
                shown.contains(&crate::secret::Fingerprint::of(value).to_string()),
                "{shown}"
            );
        }
        for (f, value) in [("app_id", token), ("system_user_id", token)] {
            let text = if f == "app_id" {
                format!(
                    "[meta]\napp_id = \"{value}\"\napp_secret = {{ env = \"S\" }}\n[[token]]\nname = \"a\"\n"
                )
            } else {
                format!(
                    "[meta]\napp_id = \"1\"\napp_secret = {{ env = \"S\" }}\n[[token]]\nname = \"a\"\nsource = \"mint\"\nmint = {{ system_user_id = \"{value}\", admin_token = {{ env = \"A\" }} }}\n"
                )
            };
            let errs = errors(&text);
            let all = format!("{errs:?}");
            assert!(all.contains(f), "{all}");
            assert!(!all.contains(&value[..12]), "{all}");
        }
        // A short mistake is still quoted, since it helps and cannot be a token.
        let errs = errors(
            "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"a\"\nwaba_id = \"12-34\"\n",
        );
        assert!(format!("{errs:?}").contains("12-34"));
    }

    #[test]
    fn every_error_in_one_file_is_reported_not_just_the_first() {
        let text = r#"
[meta]
app_id = "x1"
app_secret = "inline-secret-value"
retries = 3

[[token]]
name = "prod"
phone_number_id = "+15550104477"
typo_key = true

[[token]]
name = "prod"
waba_id = ""
"#;
        let errs = errors(text);
        let fields: Vec<&str> = errs.iter().map(|d| d.field.as_str()).collect();
        for want in [
            "meta.app_id",
            "meta.app_secret",
            "meta.retries",
            "token[0].typo_key",
            "token[0].phone_number_id",
            "token[1].name",
            "token[1].waba_id",
        ] {
            assert!(fields.contains(&want), "missing {want} in {errs:#?}");
        }
        let all = errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !all.contains("inline-secret-value"),
            "an inline secret must not be echoed: {all}"
        );
    }

    #[test]
    fn schedule_and_alerts_have_defaults_and_per_token_overrides() {
        let text = format!(
            "{GOOD}\n[schedule]\ncron = \"30 9 * * *\"\ntimezone = \"Asia/Kolkata\"\n[alerts]\nthresholds = [\"1d\", \"10d\"]\nmax_age = \"never\"\n"
        );
        // [schedule] and [alerts] after [[token]] blocks would belong to the last token in TOML,
        // so put them first.
        let text = text.replacen(GOOD, "", 1) + GOOD;
        let c = parse(Path::new("t.toml"), &text).unwrap_or_else(|d| panic!("{d:#?}"));
        let t = &c.tokens[0];
        assert_eq!(
            t.schedule,
            Schedule {
                cron: "0 30 9 * * *".into(),
                timezone: "Asia/Kolkata".into()
            }
        );
        assert_eq!(
            t.policy.thresholds,
            vec![Duration::from_secs(864_000), Duration::from_secs(86_400)]
        );
        assert_eq!(t.policy.max_age, None);
        assert_eq!(t.policy.repeat_interval, Duration::from_secs(86_400));

        let per_token = GOOD.replace(
            "name = \"billbytekot-prod\"\n",
            "name = \"billbytekot-prod\"\ncron = \"*/10 * * * * *\"\nthresholds = [\"30s\"]\nrepeat_interval = \"1m\"\n",
        );
        let c = parse(Path::new("t.toml"), &per_token).unwrap();
        assert_eq!(c.tokens[0].schedule.cron, "*/10 * * * * *");
        assert_eq!(c.tokens[0].policy.thresholds, vec![Duration::from_secs(30)]);
        assert_eq!(c.tokens[1].schedule.cron, DEFAULT_CRON);
        assert_eq!(c.tokens[1].policy, crate::policy::Policy::default());
    }

    #[test]
    fn schedule_and_alert_errors_are_located() {
        let head = "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n";
        let cases: &[(&str, &str, &str)] = &[
            (
                "[schedule]\ncron = \"61 * * * *\"\n",
                "schedule.cron",
                "invalid cron",
            ),
            ("[schedule]\ncron = \"* *\"\n", "schedule.cron", "5 fields"),
            (
                "[schedule]\ntimezone = \"Mars/Olympus\"\n",
                "schedule.timezone",
                "unknown time zone",
            ),
            (
                "[alerts]\nthresholds = [\"soon\"]\n",
                "alerts.thresholds",
                "durations",
            ),
            (
                "[alerts]\nthresholds = []\n",
                "alerts.thresholds",
                "at least one",
            ),
            (
                "[alerts]\nrepeat_interval = \"0s\"\n",
                "alerts.repeat_interval",
                "positive",
            ),
            (
                "[alerts]\nmax_age = \"sixty\"\n",
                "alerts.max_age",
                "positive",
            ),
        ];
        for (section, field, words) in cases {
            let text = format!("{head}{section}[[token]]\nname = \"a\"\n");
            let errs = errors(&text);
            assert!(
                errs.iter()
                    .any(|d| d.field == *field && d.message.contains(words) && d.line == 5),
                "{field}: {errs:#?}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("14d"), Some(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        for bad in ["", "5", "m", "5 m", "-5s", "5w", "99999999999999999999d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn loose_config_mode_is_a_warning_not_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, GOOD).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load(&p).unwrap();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("readable by others"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load(&p).unwrap().warnings.is_empty());
    }

    /// A `[[group]]` of Tech Provider business tokens was refused: its template had to give
    /// `waba_id` (which a group cannot) and one `business.client_business_id` for every
    /// customer. Each member's ids now come from its secret's tags; the partner token stays on
    /// the group. A `[[token]]` of that kind still gives both, each named when missing.
    #[test]
    fn a_business_group_takes_its_ids_from_the_members_and_a_token_still_gives_them() {
        let head = "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n";
        let c = parse(
            Path::new("t.toml"),
            &format!("{head}[[group]]\nname = \"customers\"\nkind = \"whatsapp_business\"\nsource = \"refresh\"\nbusiness = {{ partner_token = {{ env = \"P\" }} }}\ndiscover = {{ kind = \"aws\", name_prefix = \"customers/\" }}\n"),
        )
        .unwrap();
        let t = &c.groups[0].template;
        assert_eq!(t.kind, Kind::WhatsappBusiness);
        assert_eq!(t.waba_id, None);
        let b = t.business.as_ref().unwrap();
        assert_eq!(b.client_business_id, None);
        assert_eq!(b.partner_token, SecretRef::Env("P".into()));

        // One customer's id on the group would fetch that customer's token into every member.
        let e = errors(&format!(
            "{head}[[group]]\nname = \"customers\"\nkind = \"whatsapp_business\"\nsource = \"refresh\"\nbusiness = {{ client_business_id = \"5\", partner_token = {{ env = \"P\" }} }}\ndiscover = {{ kind = \"aws\", name_prefix = \"customers/\" }}\n"
        ));
        let d = e
            .iter()
            .find(|d| d.field == "group[0].business.client_business_id")
            .unwrap_or_else(|| panic!("{e:#?}"));
        assert!(d.message.contains("tokenwarden:client_business_id"), "{d}");
        assert_eq!(d.line, 8, "{d}");

        // The file store has no tags: such a group could never prove or renew a member.
        let e = errors(&format!(
            "{head}[[group]]\nname = \"customers\"\nkind = \"whatsapp_business\"\ndiscover = {{ kind = \"file\", key_prefix = \"c-\" }}\n"
        ));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].field, "group[0].discover", "{e:#?}");
        assert!(
            e[0].message.contains("the file store has no tags"),
            "{e:#?}"
        );

        // A [[token]] without them: each field named, on its line.
        let e = errors(&format!(
            "{head}\n[[token]]\nname = \"shop\"\nkind = \"whatsapp_business\"\nsource = \"refresh\"\nbusiness = {{ partner_token = {{ env = \"P\" }} }}\n"
        ));
        let waba = e
            .iter()
            .find(|d| d.field == "token[0].waba_id")
            .unwrap_or_else(|| panic!("{e:#?}"));
        assert_eq!(waba.line, 7, "{waba}");
        let biz = e
            .iter()
            .find(|d| d.field == "token[0].business.client_business_id")
            .unwrap_or_else(|| panic!("{e:#?}"));
        assert_eq!(biz.line, 9, "{biz}");
        assert!(biz.message.contains("missing field"), "{biz}");
        assert_eq!(e.len(), 2, "{e:#?}");
        // And a [[token]] that gives them is accepted as before.
        let c = parse(Path::new("t.toml"), &format!("{head}\n[[token]]\nname = \"shop\"\nkind = \"whatsapp_business\"\nwaba_id = \"2\"\nsource = \"refresh\"\nbusiness = {{ client_business_id = \"3\", partner_token = {{ env = \"P\" }} }}\n")).unwrap();
        assert_eq!(
            c.tokens[0]
                .business
                .as_ref()
                .unwrap()
                .client_business_id
                .as_deref(),
            Some("3")
        );
    }
}

#[cfg(test)]
mod example_tests {
    /// The shipped example must always parse: it is what users copy.
    #[test]
    fn deploy_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tokenwarden.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = super::parse(&path, &text).unwrap_or_else(|d| panic!("{d:#?}"));
        assert_eq!(cfg.tokens.len(), 2);
    }

    /// The annotated config in the README must parse too.
    #[test]
    fn readme_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .map(|b| &b[..b.find("```").unwrap()])
            .collect();
        assert_eq!(
            blocks.len(),
            7,
            "the token config, the daemon sections, the receivers, the kinds, the group example, the delivery example, the platform targets"
        );
        let cfg = super::parse(&path, blocks[0]).unwrap_or_else(|d| panic!("{d:#?}"));
        assert_eq!(cfg.tokens.len(), 2);
        // The daemon sections go before the [[token]] blocks, as the README says.
        let (head, tokens) = blocks[0].split_at(blocks[0].find("[[token]]").unwrap());
        let whole = format!("{head}\n{}\n{tokens}", blocks[1]);
        let cfg = super::parse(&path, &whole).unwrap_or_else(|d| panic!("{d:#?}"));
        assert!(matches!(cfg.email, Some(super::EmailConfig::Smtp { .. })));
        let with_receivers = format!("{whole}\n{}", blocks[2]);
        let cfg = super::parse(&path, &with_receivers).unwrap_or_else(|d| panic!("{d:#?}"));
        let kinds: Vec<&str> = cfg.receivers.iter().map(|r| r.kind.word()).collect();
        assert_eq!(kinds, ["alertmanager", "pagerduty", "slack"]);
        let with_kinds = format!("{head}\n{}", blocks[3]);
        let cfg = super::parse(&path, &with_kinds).unwrap_or_else(|d| panic!("{d:#?}"));
        let kinds: Vec<super::Kind> = cfg.tokens.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, crate::meta::kind::ALL, "one example per kind");
        let business: Vec<super::Kind> = cfg.groups.iter().map(|g| g.template.kind).collect();
        assert_eq!(
            business,
            [super::Kind::WhatsappBusiness],
            "the business tokens as a group"
        );
        let with_group = format!("{head}\n{}", blocks[4]);
        let cfg = super::parse(&path, &with_group).unwrap_or_else(|d| panic!("{d:#?}"));
        assert_eq!(cfg.groups.len(), 1);
        assert_eq!(cfg.groups[0].template.targets.len(), 1);
        let with_targets = format!("{head}\n{}", blocks[5]);
        let cfg = super::parse(&path, &with_targets).unwrap_or_else(|d| panic!("{d:#?}"));
        let kinds: Vec<&str> = cfg.tokens[0]
            .targets
            .iter()
            .map(|t| t.kind.word())
            .collect();
        assert_eq!(kinds, ["dotenv", "dotenv", "aws_secret", "webhook", "exec"]);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        // The platform targets' examples follow the delivery example's token.
        let with_platforms = format!("{head}\n{}\n{}", blocks[5], blocks[6]);
        let cfg = super::parse(&path, &with_platforms).unwrap_or_else(|d| panic!("{d:#?}"));
        let kinds: Vec<&str> = cfg.tokens[0].targets[5..]
            .iter()
            .map(|t| t.kind.word())
            .collect();
        assert_eq!(
            kinds,
            [
                "ssm_parameter",
                "github_actions_secret",
                "heroku_config_var",
                "vercel_env",
                "render_env_var",
                "kubernetes_secret"
            ]
        );
    }
}

#[cfg(test)]
mod deploy_kit_tests {
    /// The IAM policy names only Secrets Manager actions and scopes them to resources.
    #[test]
    fn iam_policy_is_least_privilege_json() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iam-policy.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for st in v["Statement"].as_array().unwrap() {
            let actions: Vec<&str> = st["Action"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            // ListSecrets (token groups) has no resource-level permission: AWS requires "*",
            // and it reveals names and tags, never values.
            if actions != ["secretsmanager:ListSecrets"] {
                assert_ne!(st["Resource"], "*");
            }
            for a in actions {
                assert!(a.starts_with("secretsmanager:") && !a.contains('*'), "{a}");
            }
        }
    }

    #[test]
    fn group_mistakes_are_each_reported_with_their_field() {
        let head = "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n";
        let e = crate::config::parse(std::path::Path::new("t.toml"), &format!(
            "{head}[[group]]\nname = \"a\"\n\n[[group]]\nname = \"b\"\ndiscover = {{ kind = \"aws\", tag_value = \"x\" }}\n\n[[group]]\nname = \"c/d\"\ndiscover = {{ kind = \"file\", key_prefix = \"\" }}\nspread = \"soon\"\n\n[[group]]\nname = \"b\"\ndiscover = {{ kind = \"aws\", name_prefix = \"p/\", endpoint = \"http://example.com\" }}\n"
        ))
        .unwrap_err();
        let fields: Vec<&str> = e.iter().map(|d| d.field.as_str()).collect();
        for f in [
            "group[0].discover",
            "group[1].discover.name_prefix",
            "group[1].discover.tag_value",
            "group[2].name",
            "group[2].discover.key_prefix",
            "group[2].spread",
            "group[3].name",
            "group[3].discover.endpoint",
        ] {
            assert!(fields.contains(&f), "{f} not in {e:#?}");
        }
        assert!(e.iter().all(|d| d.line > 3), "{e:#?}");
        let every_secret = e
            .iter()
            .find(|d| d.field == "group[1].discover.name_prefix")
            .unwrap();
        assert!(every_secret.message.contains("every secret of the account"));
        // A config of groups alone is complete.
        let ok = crate::config::parse(
            std::path::Path::new("t.toml"),
            &format!("{head}[[group]]\nname = \"g\"\ndiscover = {{ kind = \"file\", key_prefix = \"c-\" }}\n"),
        )
        .unwrap();
        assert_eq!(ok.groups[0].spread, crate::config::DEFAULT_SPREAD);
        assert!(ok.tokens.is_empty());
    }

    /// Every metric an alert rule uses is one tokenwarden exports.
    #[test]
    fn prometheus_rules_use_exported_metrics() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules = std::fs::read_to_string(root.join("deploy/prometheus-rules.yml")).unwrap();
        let exported = std::fs::read_to_string(root.join("src/metrics.rs")).unwrap();
        for word in rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("tokenwarden_"))
        {
            assert!(
                exported.contains(&format!("\"{word}")),
                "{word} is not exported"
            );
        }
    }
}
