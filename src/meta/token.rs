//! What Graph's `debug_token` and phone-number reads say, as plain data: [`TokenInfo`] and
//! [`Proof`], with the scope rules read off them. Pure: [`crate::graph`] fills them in, and the
//! usability rule ([`crate::usable`]) and `doctor` judge them without importing the client.

use jiff::Timestamp;

use super::WHATSAPP_SCOPES;
use super::error::{ApiError, GraphError};

/// What `debug_token` says about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Meta's verdict; `None` when `data` did not say (every field but `scopes` may be
    /// absent: unknown, never taken as "invalid"). Use [`TokenInfo::valid`] and
    /// [`TokenInfo::invalid_reason`].
    pub is_valid: Option<bool>,
    /// The app the token belongs to (absent for unparseable tokens).
    pub app_id: Option<String>,
    /// `SYSTEM_USER`, `USER`, `PAGE`, `APP`.
    pub token_type: Option<String>,
    /// The app's name.
    pub application: Option<String>,
    /// When the token expires.
    pub expires_at: Expiry,
    /// When data access lapses (user tokens); `None` when 0 or absent.
    pub data_access_expires_at: Option<Timestamp>,
    /// When the token was issued.
    pub issued_at: Option<Timestamp>,
    /// Granted permissions.
    pub scopes: Vec<String>,
    /// Per-permission targets (WABA ids for the WhatsApp scopes).
    pub granular_scopes: Vec<GranularScope>,
    /// The user or system user the token acts as.
    pub user_id: Option<String>,
    /// The Page a Page token speaks for (`profile_id`).
    pub profile_id: Option<String>,
    /// Why Meta considers the token invalid, when it does.
    pub error: Option<ApiError>,
}

/// A token's expiry as `debug_token` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// `expires_at: 0`.
    Never,
    /// A moment.
    At(Timestamp),
    /// Not reported.
    Unknown,
}

/// One entry of `granular_scopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GranularScope {
    /// The permission.
    pub scope: String,
    /// The objects it applies to; order is not meaningful.
    pub target_ids: Vec<String>,
}

impl TokenInfo {
    /// Whether Meta said `is_valid: true`.
    pub fn valid(&self) -> bool {
        self.is_valid == Some(true)
    }

    /// Whether Meta said nothing either way: no `is_valid` and no `error` in `data`. The
    /// token's validity is then decided by what it can read ([`crate::usable`]).
    pub fn validity_unknown(&self) -> bool {
        self.is_valid.is_none() && self.error.is_none()
    }

    /// Meta's reason when the token is invalid: `data.error`, or a bare code 190 when Meta
    /// said `is_valid: false` without one. `None` for a valid token, and when Meta said
    /// nothing (an absent `is_valid` is unknown, not invalid; an `error` still counts).
    pub fn invalid_reason(&self) -> Option<ApiError> {
        match self.is_valid {
            Some(true) => None,
            None => self.error.clone(),
            Some(false) => Some(self.error.clone().unwrap_or(ApiError {
                status: 200,
                code: 190,
                subcode: None,
                kind: None,
                message: String::new(),
                details: None,
                fbtrace_id: None,
            })),
        }
    }

    /// Whether `scope` is granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The WhatsApp scopes that are missing.
    pub fn missing_whatsapp_scopes(&self) -> Vec<&'static str> {
        WHATSAPP_SCOPES
            .into_iter()
            .filter(|s| !self.has_scope(s))
            .collect()
    }

    /// WABA ids the token can reach: the targets of the WhatsApp scopes, deduplicated and
    /// sorted (Meta's order varies between calls).
    pub fn waba_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .granular_scopes
            .iter()
            .filter(|g| WHATSAPP_SCOPES.contains(&g.scope.as_str()))
            .flat_map(|g| g.target_ids.iter().cloned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The WABAs the WhatsApp scopes are limited to, or `None` when at least one of them has
    /// no `target_ids` (or no `granular_scopes` entry): Meta omits them when the permission
    /// was granted in general (its own `SYSTEM_USER` example on "WhatsApp permissions"), so
    /// debug_token alone cannot say whether a WABA is reachable; a read decides
    /// ([`crate::usable`]).
    pub fn waba_targets(&self) -> Option<Vec<String>> {
        let listed = WHATSAPP_SCOPES.iter().all(|scope| {
            let mut entries = self
                .granular_scopes
                .iter()
                .filter(|g| g.scope == *scope)
                .peekable();
            entries.peek().is_some() && entries.all(|g| !g.target_ids.is_empty())
        });
        listed.then(|| self.waba_ids())
    }

    /// Whether both WhatsApp scopes list `waba` among their targets. Membership, never position.
    pub fn targets_waba(&self, waba: &str) -> bool {
        WHATSAPP_SCOPES.iter().all(|scope| {
            self.granular_scopes
                .iter()
                .any(|g| g.scope == *scope && g.target_ids.iter().any(|t| t == waba))
        })
    }
}

/// A WhatsApp business phone number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PhoneNumber {
    /// The phone-number id (what the API wants), not the number itself.
    pub id: String,
    /// The number as people dial it, such as `+1 555-010-4477`.
    pub display_phone_number: Option<String>,
    /// The business name shown to customers.
    pub verified_name: Option<String>,
    /// GREEN, YELLOW, RED, NA, or something newer.
    pub quality_rating: Option<String>,
    /// Code verification status, when asked for.
    pub code_verification_status: Option<String>,
    /// Display-name review status, when asked for.
    pub name_status: Option<String>,
}

/// What [`crate::graph::GraphClient::prove`] read with a token; `None` where nothing was read.
#[derive(Debug, Clone, Default)]
pub struct Proof {
    /// The WABA read, made when `debug_token` listed no targets.
    pub waba: Option<Result<(), GraphError>>,
    /// The phone-number read.
    pub phone: Option<Result<PhoneNumber, GraphError>>,
    /// A Page token's read of its Page.
    pub page: Option<Result<(), GraphError>>,
    /// A Messenger Page's subscription to the app (`true`: subscribed).
    pub subscribed: Option<Result<bool, GraphError>>,
    /// A Marketing token's reads of its ad accounts: (id, `account_status`).
    pub ad_accounts: Vec<(String, Result<i64, GraphError>)>,
    /// A business token's read of its customer's WABA's phone numbers (how many).
    pub waba_numbers: Option<Result<usize, GraphError>>,
}
