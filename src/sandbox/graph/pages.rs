//! The demo Facebook Page: `GET /{page-id}?fields=id,name` (the Page read a Page token proves
//! itself with), `GET /{page-id}?fields=access_token` (a user token takes the Page token: one
//! that never expires, its data access 90 days, as the Pages API's long-lived Page tokens) and
//! `GET /{page-id}/subscribed_apps` (the apps the Page delivers Messenger events to).
//!
//! Strict as the pages: only a token of this Page (`PAGE`, `profile_id` the Page) or of a person
//! (`USER`) reads the Page; only a person's token takes the Page token; only the Page's own token
//! lists its subscribed apps; anything else is Graph's "Unsupported get request" (code 100,
//! subcode 33). Reads carry the usual authentication (`appsecret_proof` when the app wants it).
//! A Messenger policy refusal set with `Sandbox::set_page_policy` (code 10/2018278 outside the
//! messaging window, code 230 without `pages_messaging`) answers the Page's own token's reads;
//! after `Sandbox::remove_page_role` a person's token is refused (code 200).

use serde_json::json;

use super::auth::{Caller, authenticate};
use super::call::Call;
use super::envelope::{GraphError, Reply, unsupported};
use crate::sandbox::scenario::{DEMO_PAGE_ID, DEMO_PAGE_NAME, TokenKind};
use crate::sandbox::world::{MessengerPolicy, TokenRec, World};

/// Whether `call` is for the demo Page.
pub(super) fn is_page(call: &Call) -> bool {
    call.segments.first().is_some_and(|s| s == DEMO_PAGE_ID)
}

/// Routes a call on the demo Page.
pub(super) fn dispatch(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let method = call.method.to_ascii_lowercase();
    if !call.is_get() {
        return Err(unsupported(&method, DEMO_PAGE_ID));
    }
    let rec = match authenticate(w, call, false, false)? {
        Caller::Token(rec) => rec,
        Caller::App => return Err(unsupported(&method, DEMO_PAGE_ID)),
    };
    let own = rec.kind == TokenKind::Page && rec.user_id.as_deref() == Some(DEMO_PAGE_ID);
    let person = rec.kind == TokenKind::User;
    if person && w.page_role_lost {
        return Err(super::envelope::permissions_error());
    }
    if own && let Some(policy) = w.page_policy {
        return Err(policy_error(policy));
    }
    match call.segments.as_slice() {
        [_] if call
            .param("fields")
            .is_some_and(|f| f.split(',').any(|x| x.trim() == "access_token")) =>
        {
            if !person {
                return Err(unsupported(&method, DEMO_PAGE_ID));
            }
            Ok(Reply::json(
                200,
                &json!({"access_token": page_token(w, &rec), "id": DEMO_PAGE_ID}),
            ))
        }
        [_] if own || person => Ok(Reply::json(
            200,
            &json!({"id": DEMO_PAGE_ID, "name": DEMO_PAGE_NAME}),
        )),
        [_, edge] if edge == "subscribed_apps" && own => {
            let app = w.default_app_id();
            let data = if w.page_subscribed {
                vec![
                    json!({"id": app, "name": "Lucky Shrub app", "subscribed_fields": ["messages"]}),
                ]
            } else {
                Vec::new()
            };
            Ok(Reply::json(200, &json!({"data": data})))
        }
        _ => Err(unsupported(&method, &call.segments.join("/"))),
    }
}

/// The envelope of a Messenger policy refusal, as the Messenger Platform's error codes page
/// shows it (`OAuthException`, HTTP 400).
fn policy_error(policy: MessengerPolicy) -> GraphError {
    match policy {
        MessengerPolicy::OutsideWindow => GraphError::new(
            10,
            "(#10) This message is sent outside of allowed window. Learn more about the new policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview",
        )
        .sub(2018278),
        MessengerPolicy::NoMessagingPermission => GraphError::new(
            230,
            "(#230) Requires pages_messaging permission to manage the object",
        ),
    }
}

/// A new Page token for the Page, taken by `user` (its app and scopes).
fn page_token(w: &mut World, user: &TokenRec) -> String {
    let spec = crate::sandbox::scenario::TokenSpec::page().app(user.app_id.clone());
    let value = w.issue(&crate::sandbox::scenario::TokenSpec {
        scopes: user
            .scopes
            .iter()
            .cloned()
            .chain(spec.scopes.iter().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect(),
        ..spec
    });
    w.stats.refreshed += 1;
    value
}
