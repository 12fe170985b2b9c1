//! The switches of Meta's behaviour that a scenario file (`[quirks]`, `[usage]`) and the admin
//! API (`POST /_sandbox/quirks`, `POST /_sandbox/usage`) set: [`Quirks`], what real Meta does
//! beyond its strict documented default, and [`UsageModel`], the app-level rate limit.
//!
//! Only their definitions are here: each quirk is applied in the file of the endpoint it
//! changes (`graph/tokens.rs`, `graph/whatsapp.rs`); usage is counted in `world.rs` and its
//! hourly quota enforced by `debug_token` (`graph/tokens.rs`).

use serde::{Deserialize, Serialize};

/// Behaviours of real Meta that the documentation allows or the field has shown, off by
/// default (the default is the documentation read strictly). Each one exists because a client
/// written against the strict default alone would break in production; `docs/meta-contract.md`
/// names the source of each and the test that needs it.
///
/// In a scenario file: `[quirks]`; at run time: `POST /_sandbox/quirks` with any of the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quirks {
    /// `debug_token` lists system-user tokens' `granular_scopes` without `target_ids` (Meta's
    /// own `SYSTEM_USER` example on "WhatsApp permissions": the permission granted in general).
    pub omit_target_ids: bool,
    /// `fb_exchange_token` hands back the same token string with a later expiry (field reports
    /// for user tokens; nothing in the docs rules it out).
    pub refresh_same_string: bool,
    /// The business must use expiring tokens: minting without
    /// `set_token_expires_in_60_days=true` fails ("System users" page).
    pub require_expiring_tokens: bool,
    /// Business-use-case throttling: calls on the business's assets made with a user or
    /// system-user token are refused (code 80008) until this sandbox unix time, with
    /// `estimated_time_to_regain_access` in minutes in `X-Business-Use-Case-Usage` and no
    /// `Retry-After`. 0 = off. The admin API takes `business_throttle_minutes` from now.
    pub business_throttle_until: i64,
    /// Fields dropped from every `debug_token` `data` (`is_valid`, `expires_at`, `issued_at`,
    /// `type`, ...): Meta treats every field but `scopes` as optional.
    pub omit_debug_fields: Vec<String>,
}

/// How the sandbox fills `X-App-Usage`, as Meta's app-level rate limit: a rolling window of
/// sandbox time over which `call_limit` calls make 100 %. Every Graph request counts, and each
/// item of a batch counts as one more, as at Meta. Usage is reported; it is enforced only with
/// `enforce` (Meta's hourly quota of 200 calls per app user). [`Fault::RateLimit`](super::Fault::RateLimit) refuses
/// calls regardless.
///
/// In a scenario file: `[usage]` with `window_secs`, `call_limit` and `enforce`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageModel {
    /// The rolling window, in sandbox seconds (Meta's is an hour).
    pub window_secs: i64,
    /// Calls within the window that make 100 % (at least 1).
    pub call_limit: u64,
    /// Enforce the limit as Meta's hourly app quota does: past 100 %, calls made with the app
    /// token are refused with code 4 (and no `Retry-After`), each batch item counted.
    pub enforce: bool,
}

impl Default for UsageModel {
    /// An hour and 100,000 calls: a 10,000-token check reads about 10 %.
    fn default() -> Self {
        UsageModel {
            window_secs: 3600,
            call_limit: 100_000,
            enforce: false,
        }
    }
}
