//! Graph JSON shapes as Meta sends them. Private to `graph`: the rest of tokenwarden sees the
//! typed values of `graph::TokenInfo` and friends.
//!
//! Every field but `is_valid` and `scopes` is optional (reference section 1), ids may come as
//! strings or numbers, and unknown fields are ignored: Meta adds fields without notice.

use serde::{Deserialize, Deserializer};

#[derive(Deserialize)]
pub(super) struct DebugTokenResponse {
    pub data: DebugTokenData,
}

#[derive(Deserialize)]
pub(super) struct DebugTokenData {
    #[serde(default, deserialize_with = "loose_string")]
    pub app_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub application: Option<String>,
    #[serde(default, deserialize_with = "loose_int")]
    pub expires_at: Option<i64>,
    #[serde(default, deserialize_with = "loose_int")]
    pub data_access_expires_at: Option<i64>,
    #[serde(default, deserialize_with = "loose_int")]
    pub issued_at: Option<i64>,
    #[serde(default)]
    pub is_valid: Option<bool>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub granular_scopes: Vec<GranularScopeWire>,
    #[serde(default, deserialize_with = "loose_string")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub profile_id: Option<String>,
    pub error: Option<DataError>,
}

#[derive(Deserialize)]
pub(super) struct GranularScopeWire {
    pub scope: String,
    #[serde(default, deserialize_with = "loose_strings")]
    pub target_ids: Vec<String>,
}

#[derive(Deserialize)]
pub(super) struct DataError {
    #[serde(default, deserialize_with = "loose_int")]
    pub code: Option<i64>,
    #[serde(default)]
    pub message: String,
    #[serde(default, deserialize_with = "loose_int")]
    pub subcode: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct PhoneNumberWire {
    #[serde(deserialize_with = "loose_string_req")]
    pub id: String,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
    pub quality_rating: Option<String>,
    pub code_verification_status: Option<String>,
    pub name_status: Option<String>,
}

/// Any node read with `fields=id,...`: only the id matters.
#[derive(Deserialize)]
pub(super) struct Node {
    #[allow(dead_code)]
    #[serde(deserialize_with = "loose_string_req")]
    pub id: String,
}

#[derive(Deserialize)]
pub(super) struct PhoneNumberPage {
    #[serde(default)]
    pub data: Vec<PhoneNumberWire>,
    pub paging: Option<Paging>,
}

#[derive(Deserialize)]
pub(super) struct Paging {
    pub cursors: Option<Cursors>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Cursors {
    pub after: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct MessageResponse {
    #[serde(default)]
    pub messages: Vec<MessageId>,
}

#[derive(Deserialize)]
pub(super) struct MessageId {
    pub id: String,
}

/// `oauth/access_token` (refresh): `{"access_token","token_type","expires_in"}`.
#[derive(Deserialize)]
pub(super) struct RefreshResponse {
    pub access_token: String,
    #[serde(default, deserialize_with = "loose_int")]
    pub expires_in: Option<i64>,
}

/// Threads' `oauth/access_token` with `client_credentials`: `{"access_token","token_type"}`.
/// Only whether a token came back is read; the value goes straight into a `Secret` and is
/// dropped.
#[derive(Deserialize)]
pub(super) struct AppTokenResponse {
    pub access_token: String,
}

/// `GET /me` on the Instagram (`user_id`, `username`) or Threads (`id`, `username`) host.
#[derive(Deserialize)]
pub(super) struct KindMe {
    #[serde(default, deserialize_with = "loose_string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "loose_string")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

/// `POST /{client-business-id}/system_user_access_tokens`: `{"access_token"}`.
#[derive(Deserialize)]
pub(super) struct BusinessToken {
    pub access_token: String,
}

/// `GET /act_{id}?fields=account_status,name`.
#[derive(Deserialize)]
pub(super) struct AdAccount {
    #[serde(default, deserialize_with = "loose_int")]
    pub account_status: Option<i64>,
}

/// `GET /{page-id}?fields=access_token` with a user token: the Page token.
#[derive(Deserialize)]
pub(super) struct PageAccessToken {
    pub access_token: String,
}

/// `GET /{page-id}/subscribed_apps`: `{"data":[{"id","name"}]}`.
#[derive(Deserialize)]
pub(super) struct SubscribedApps {
    #[serde(default)]
    pub data: Vec<Node>,
}

/// `/{system-user-id}/access_tokens` (mint): `{"access_token"}` only, no expiry.
#[derive(Deserialize)]
pub(super) struct MintResponse {
    pub access_token: String,
}

/// `oauth/revoke`: documented as `{"success":"true",}` (a string, and a trailing comma that
/// makes it invalid JSON); `graph::revoke_outcome` mends the comma before parsing this.
#[derive(Deserialize)]
pub(super) struct RevokeResponse {
    pub success: Option<serde_json::Value>,
}

/// One answer in a batch response: `{"code":200,"headers":[...],"body":"<JSON as a string>"}`.
/// Meta answers `null` for an item it did not get to (it timed out inside the batch).
#[derive(Deserialize)]
pub(super) struct BatchItem {
    #[serde(default, deserialize_with = "loose_int")]
    pub code: Option<i64>,
    /// Absent with `include_headers=false`.
    #[serde(default)]
    pub headers: Option<Vec<BatchHeader>>,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct BatchHeader {
    pub name: String,
    pub value: String,
}

fn loose_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn loose_string_req<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    loose_string(d)?.ok_or_else(|| serde::de::Error::custom("expected an id"))
}

fn loose_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Option::<Vec<serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(v.into_iter()
        .filter_map(|x| match x {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect())
}

fn loose_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(super::error::loose_i64))
}
