//! The token endpoints: `debug_token` (the inspector, the `data` of a valid, expired or killed
//! token, the hourly app quota when enforced), `oauth/access_token` (app tokens and
//! `fb_exchange_token`), `oauth/revoke`, and minting with `{system-user}/access_tokens`.
//!
//! The quirks that change these endpoints are applied here: `omit_debug_fields` and
//! `omit_target_ids` (debug_token), `refresh_same_string` (refresh), `require_expiring_tokens`
//! (minting). Authenticating the caller is `auth.rs`; phone and WABA reads are `whatsapp.rs`.

use serde_json::{Value, json};

use super::auth::{
    Caller, authenticate, bad_app_id, bad_signature, check_proof, client_app, dead_token_error,
    expired_message, kill_message, no_token, parse_app_token, unparseable,
};
use super::call::Call;
use super::envelope::{
    GraphError, JSON_TYPE, Reply, missing_param, permissions_error, unsupported,
};
use crate::sandbox::scenario::{Lifetime, TokenKind, TokenSpec, WHATSAPP_SCOPES};
use crate::sandbox::world::{Kill, Status, TokenRec, World, round_up_hour};

/// Permission names minting accepts; any other is refused as Meta refuses an unknown scope.
const KNOWN_SCOPES: &[&str] = &[
    "whatsapp_business_management",
    "whatsapp_business_messaging",
    "whatsapp_business_manage_events",
    "business_management",
    "ads_management",
    "ads_read",
    "catalog_management",
    "pages_show_list",
    "pages_read_engagement",
    "pages_manage_metadata",
    "pages_messaging",
    "instagram_basic",
    "instagram_manage_messages",
    "email",
    "public_profile",
];

fn app_mismatch() -> GraphError {
    GraphError::new(
        100,
        "(#100) The App_id in the input_token did not match the Viewing App",
    )
}

// ---------------------------------------------------------------------------------------------
// debug_token

/// `GET /debug_token`: only an app token (of the token's app) may inspect.
pub(super) fn debug_token(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    if !call.is_get() {
        return Err(unsupported(
            &call.method.to_ascii_lowercase(),
            "debug_token",
        ));
    }
    let inspector = call.token().ok_or_else(no_token)?.to_string();
    let viewing_app = match parse_app_token(&inspector) {
        Some((id, secret)) => {
            if w.app(id).is_none() {
                return Err(bad_app_id());
            }
            if w.secret_of(id) != Some(secret) {
                return Err(bad_signature());
            }
            check_proof(w, call, &inspector, id, false)?;
            if w.scenario.usage.enforce && w.usage_percent() > 100 {
                // Meta's hourly app quota ("Rate limiting"): code 4, no Retry-After.
                return Err(
                    GraphError::new(4, "(#4) Application request limit reached").transient()
                );
            }
            id.to_string()
        }
        None => {
            let Some(rec) = w.tokens.get(&inspector).cloned() else {
                return Err(unparseable(&inspector, false));
            };
            if rec.kind.other_host() {
                return Err(super::kinds::cannot_parse());
            }
            if let Some(e) = dead_token_error(w, &rec) {
                return Err(e);
            }
            return Err(GraphError::new(
                100,
                "(#100) You must provide an app access token, or a user access token that is an owner or developer of the app",
            ));
        }
    };
    let input = call
        .param("input_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("input_token"))?
        .to_string();
    let data = if let Some((id, secret)) = parse_app_token(&input) {
        match w.app(id) {
            None => invalid_data("Invalid OAuth access token - Cannot parse access token"),
            Some(_) if id != viewing_app => return Err(app_mismatch()),
            Some(app) if w.secret_of(id) == Some(secret) => json!({
                "app_id": id,
                "type": "APP",
                "application": app.name,
                "is_valid": true,
                "scopes": [],
            }),
            Some(_) => invalid_data("Invalid OAuth access token signature."),
        }
    } else if let Some(rec) = w.tokens.get(&input).cloned() {
        if rec.kind.other_host() {
            // Graph's debug_token does not parse Instagram Login or Threads tokens.
            invalid_data("Invalid OAuth access token - Cannot parse access token")
        } else if rec.app_id != viewing_app {
            return Err(app_mismatch());
        } else {
            token_data(w, &rec)
        }
    } else if input.starts_with("EAA") {
        invalid_data("The access token could not be decrypted")
    } else {
        invalid_data("Invalid OAuth access token - Cannot parse access token")
    };
    let mut data = data;
    if let Value::Object(map) = &mut data {
        for field in &w.scenario.quirks.omit_debug_fields {
            map.remove(field);
        }
    }
    Ok(Reply::json(200, &json!({ "data": data })))
}

fn invalid_data(message: &str) -> Value {
    json!({"error": {"code": 190, "message": message}, "is_valid": false, "scopes": []})
}

/// debug_token's `data` for a known token.
fn token_data(w: &mut World, rec: &TokenRec) -> Value {
    let now = w.now();
    let application = w
        .app(&rec.app_id)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let mut d = serde_json::Map::new();
    d.insert("app_id".into(), json!(rec.app_id));
    d.insert("type".into(), json!(rec.kind.as_str()));
    d.insert("application".into(), json!(application));
    d.insert(
        "data_access_expires_at".into(),
        json!(rec.data_access_expires_at),
    );
    d.insert("expires_at".into(), json!(rec.expires_at));
    d.insert("issued_at".into(), json!(rec.issued_at));
    match rec.kind {
        TokenKind::Page => d.insert("profile_id".into(), json!(rec.user_id)),
        _ => d.insert("user_id".into(), json!(rec.user_id)),
    };
    match rec.status(now) {
        Status::Valid => {
            d.insert("is_valid".into(), json!(true));
            d.insert("scopes".into(), json!(rec.scopes));
            // Meta omits `target_ids` when a permission was granted in general (its own
            // SYSTEM_USER example on "WhatsApp permissions"), switchable as a quirk.
            let general = w.scenario.quirks.omit_target_ids && rec.kind == TokenKind::SystemUser;
            let granular: Vec<Value> = rec
                .scopes
                .iter()
                .map(|s| {
                    if s.starts_with("whatsapp_business_") && !rec.wabas.is_empty() && !general {
                        // Meta's order is not stable: clients must test membership.
                        let mut ids = rec.wabas.clone();
                        w.rng.shuffle(&mut ids);
                        json!({"scope": s, "target_ids": ids})
                    } else {
                        json!({"scope": s})
                    }
                })
                .collect();
            d.insert("granular_scopes".into(), json!(granular));
        }
        Status::Expired => {
            d.insert("is_valid".into(), json!(false));
            d.insert("scopes".into(), json!(rec.scopes));
            d.insert(
                "error".into(),
                json!({"code": 190, "message": expired_message(rec.expires_at, now), "subcode": 463}),
            );
        }
        Status::Dead(kill) => {
            let (message, subcode) = kill_message(w, kill, &rec.app_id);
            d.insert("is_valid".into(), json!(false));
            d.insert("scopes".into(), json!([]));
            d.insert(
                "error".into(),
                json!({"code": 190, "message": message, "subcode": subcode}),
            );
            // Invalidated tokens sometimes show `expires_at: 0`, which is not "never expires".
            if matches!(kill, Kill::Invalidated(_)) && w.rng.below(2) == 0 {
                d.insert("expires_at".into(), json!(0));
            }
        }
    }
    Value::Object(d)
}

// ---------------------------------------------------------------------------------------------
// oauth: refresh and revoke

/// `oauth/access_token`: an app token for `client_credentials`, a 60-day token for `fb_exchange_token`.
pub(super) fn refresh(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let app_id = client_app(w, call)?;
    match call.param("grant_type") {
        Some("client_credentials") => {
            let secret = w.secret_of(&app_id).unwrap_or_default().to_string();
            return Ok(Reply::json(
                200,
                &json!({"access_token": format!("{app_id}|{secret}"), "token_type": "bearer"}),
            ));
        }
        Some("fb_exchange_token") => {}
        Some(other) => {
            return Err(GraphError::new(
                100,
                format!("(#100) Unsupported grant_type: {other}"),
            ));
        }
        None => return Err(missing_param("grant_type")),
    }
    let old = call
        .param("fb_exchange_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("fb_exchange_token"))?;
    let Some(rec) = w.tokens.get(old).cloned().filter(|r| !r.kind.other_host()) else {
        return Err(unparseable(old, false));
    };
    if rec.app_id != app_id {
        return Err(app_mismatch());
    }
    if let Some(e) = dead_token_error(w, &rec) {
        return Err(e);
    }
    // Strict: only user and system-user tokens that expire are exchanged ("System users":
    // refresh is for the 60-day tokens). A client that would send a page token or a
    // never-expiring one (which a lenient server trades for a 60-day one) fails here first.
    if matches!(rec.kind, TokenKind::Page | TokenKind::App) {
        return Err(GraphError::new(
            100,
            format!(
                "(#100) A {} access token cannot be exchanged with fb_exchange_token",
                rec.kind.as_str().to_ascii_lowercase().replace('_', " ")
            ),
        ));
    }
    if rec.expires_at == 0 {
        return Err(GraphError::new(
            100,
            "(#100) This access token does not expire and cannot be refreshed",
        ));
    }
    let new = if w.scenario.quirks.refresh_same_string {
        // Seen in the field for user tokens: the same string comes back, living longer.
        let now = w.now();
        let rec = w.tokens.get_mut(old).expect("looked up above");
        rec.expires_at = round_up_hour(now + 60 * 86_400);
        rec.clone()
    } else {
        w.reissue_60d(&rec)
    };
    w.stats.refreshed += 1;
    let expires_in = new.expires_at - w.now();
    Ok(Reply::json(
        200,
        &json!({"access_token": new.value, "token_type": "bearer", "expires_in": expires_in}),
    ))
}

/// `oauth/revoke`, strict as its page: `client_id`, the caller's app and the revoked token's
/// app "must all be the same", and a user or system-user caller needs its `appsecret_proof`
/// when the app requires one ("Require App Secret").
pub(super) fn revoke(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let app_id = client_app(w, call)?;
    let target = call
        .param("revoke_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("revoke_token"))?
        .to_string();
    if let Some(caller) = call.token() {
        let caller = caller.to_string();
        match parse_app_token(&caller) {
            Some((id, _)) if id != app_id => return Err(app_mismatch()),
            Some(_) => {}
            None => match w.tokens.get(&caller).cloned() {
                None => return Err(unparseable(&caller, false)),
                Some(rec) => {
                    if rec.app_id != app_id {
                        return Err(app_mismatch());
                    }
                    let required = w.app(&rec.app_id).is_some_and(|a| a.require_app_secret);
                    check_proof(w, call, &caller, &rec.app_id, required)?;
                    if let Some(e) = dead_token_error(w, &rec) {
                        // Revoking a token with itself after it died still fails like Meta.
                        if caller != target {
                            return Err(e);
                        }
                    }
                }
            },
        }
    }
    match w.tokens.get_mut(&target) {
        None => return Err(unparseable(&target, false)),
        Some(rec) if rec.app_id != app_id => return Err(app_mismatch()),
        Some(rec) => rec.kill = Some(Kill::Revoked),
    }
    w.stats.revoked += 1;
    // The documented answer, trailing comma included: clients must parse leniently.
    Ok(Reply::raw(200, JSON_TYPE, "{\"success\":\"true\",}"))
}

// ---------------------------------------------------------------------------------------------
// minting

/// `POST /{system-user-id}/access_tokens`, by an admin system user of the business only.
pub(super) fn mint(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let su_id = call.segments[0].clone();
    if call.is_get() {
        return Err(unsupported("get", &format!("{su_id}/access_tokens")));
    }
    let caller = match authenticate(w, call, false, true)? {
        Caller::Token(rec) => rec,
        Caller::App => {
            return Err(GraphError::new(
                190,
                "(#190) This method must be called with a user or system user access token",
            ));
        }
    };
    let Some(su) = w
        .scenario
        .system_users
        .iter()
        .find(|u| u.id == su_id)
        .cloned()
    else {
        return Err(unsupported("post", &su_id));
    };
    // Strict: only an admin system user of the same business may mint ("System users:
    // install apps and generate tokens"); an employee system user, a person or a page may not.
    let admin_ok = caller.kind == TokenKind::SystemUser
        && caller.user_id.as_deref().is_some_and(|id| {
            w.scenario
                .system_users
                .iter()
                .any(|u| u.id == id && u.admin)
        });
    if !admin_ok {
        return Err(permissions_error());
    }
    let app_id = call
        .param("business_app")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| missing_param("business_app"))?
        .to_string();
    if w.app(&app_id).is_none() {
        return Err(GraphError::new(
            100,
            "(#100) Param business_app must be a valid application ID",
        ));
    }
    if !su.apps.contains(&app_id) {
        return Err(GraphError::new(100, "(#100) Invalid parameter").user(
            "App not installed",
            format!(
                "The app {app_id} is not installed for system user {su_id}. Add the app to the system user's assets in Business Settings, then try again."
            ),
        ));
    }
    let scopes: Vec<String> = match call.param("scope") {
        Some(s) if !s.trim().is_empty() => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        _ => WHATSAPP_SCOPES.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(unknown) = scopes.iter().find(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return Err(GraphError::new(
            100,
            format!("(#100) Invalid scope: {unknown}"),
        ));
    }
    let sixty = call.param("set_token_expires_in_60_days") == Some("true");
    if !sixty && w.scenario.quirks.require_expiring_tokens {
        // "Some businesses must use expiring tokens ... omitting this parameter or setting it
        // to false results in an error" (the code is not documented: 100 is a guess).
        return Err(GraphError::new(
            100,
            "(#100) This business requires expiring system user access tokens: set set_token_expires_in_60_days to true",
        ));
    }
    let spec = TokenSpec {
        kind: TokenKind::SystemUser,
        app_id: Some(app_id),
        scopes,
        wabas: su.wabas.clone(),
        lifetime: if sixty {
            Lifetime::Days60
        } else {
            Lifetime::Never
        },
        issued_ago_secs: 0,
        user_id: Some(su_id),
    };
    let value = w.issue(&spec);
    w.stats.minted += 1;
    Ok(Reply::json(200, &json!({ "access_token": value })))
}
