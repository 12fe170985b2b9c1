//! A Tech Provider's customers: `POST /{client-business-id}/system_user_access_tokens` with
//! `fetch_only=true` hands back the customer's business integration system-user token (made at
//! Embedded Signup; `Sandbox::issue_business_token`), to the partner's own system-user token of
//! the same app, with its `appsecret_proof` (always required here, as for minting). A customer
//! who removed the app (`Sandbox::disconnect_business`) or an unknown business is code 200.
//! Without `fetch_only` the call would make a new token: not served (tokenwarden never asks).

use serde_json::json;

use super::auth::{Caller, authenticate};
use super::call::Call;
use super::envelope::{GraphError, Reply, missing_param, permissions_error, unsupported};
use crate::sandbox::scenario::TokenKind;
use crate::sandbox::world::World;

/// Whether `call` is for `/{business}/system_user_access_tokens`.
pub(super) fn is_business_tokens(call: &Call) -> bool {
    matches!(call.segments.as_slice(), [_, e] if e == "system_user_access_tokens")
}

/// `POST /{client-business-id}/system_user_access_tokens`.
pub(super) fn fetch(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let business = call.segments[0].clone();
    if call.method != "POST" {
        return Err(unsupported(
            &call.method.to_ascii_lowercase(),
            "system_user_access_tokens",
        ));
    }
    let partner = match authenticate(w, call, false, true)? {
        Caller::Token(rec) if rec.kind == TokenKind::SystemUser => rec,
        _ => return Err(permissions_error()),
    };
    match call.param("fetch_only") {
        Some("true") => {}
        Some(_) => {
            return Err(GraphError::new(
                100,
                "(#100) Only fetch_only=true is served by the sandbox",
            ));
        }
        None => return Err(missing_param("fetch_only")),
    }
    let Some(token) = w.business_tokens.get(&business).cloned() else {
        return Err(permissions_error());
    };
    let same_app = w
        .tokens
        .get(&token)
        .is_some_and(|r| r.app_id == partner.app_id);
    if !same_app {
        return Err(permissions_error());
    }
    Ok(Reply::json(200, &json!({"access_token": token})))
}
