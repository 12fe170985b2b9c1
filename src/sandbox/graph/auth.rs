//! Who is calling, and whether the token still works: app tokens (`APP_ID|SECRET`),
//! `appsecret_proof` (plain and with `appsecret_time`), "Require App Secret",
//! `client_id`/`client_secret`, and the envelope (with its varying wording) of a token that has
//! expired or been killed.
//!
//! What a caller may then do is decided by the endpoint: scopes and WABAs in `whatsapp.rs`,
//! the admin system user and the apps that must agree in `tokens.rs`.

use super::call::Call;
use super::envelope::{GraphError, missing_param};
use crate::sandbox::world::{Kill, Status, TokenRec, World, pacific};
use crate::secret::{Secret, appsecret_proof};

/// How far `appsecret_time` may be from the sandbox clock (reference section 4).
const PROOF_TIME_WINDOW: i64 = 300;

/// A call without any access token (code 104).
pub(super) fn no_token() -> GraphError {
    GraphError::new(104, "An access token is required to request this resource.")
}

/// A token the sandbox never issued: the wording depends on its shape and the endpoint.
pub(super) fn unparseable(token: &str, whatsapp: bool) -> GraphError {
    if token.starts_with("EAA") {
        GraphError::new(190, "The access token could not be decrypted")
    } else if whatsapp {
        // WhatsApp endpoints answer some dead tokens with this bare envelope.
        GraphError::new(190, "Authentication Error").bare()
    } else {
        GraphError::new(
            190,
            "Invalid OAuth access token - Cannot parse access token",
        )
    }
}

/// An app token with the wrong secret.
pub(super) fn bad_signature() -> GraphError {
    GraphError::new(190, "Invalid OAuth access token signature.")
}

/// An app id the world does not have (code 101).
pub(super) fn bad_app_id() -> GraphError {
    GraphError::new(101, "Error validating application. Invalid application ID.")
}

pub(super) fn bad_client_secret() -> GraphError {
    GraphError::new(1, "Error validating client secret.")
}

/// The message and subcode of a token killed before its expiry. The wording varies between
/// calls, as Meta's does: clients must match on codes.
pub(super) fn kill_message(w: &mut World, kill: Kill, app_id: &str) -> (String, u32) {
    const P: &str = "Error validating access token: ";
    let (text, sub): (String, u32) = match kill {
        Kill::Revoked => (
            "The session was invalidated explicitly using an API call.".into(),
            466,
        ),
        Kill::Invalidated(460) => {
            let texts = [
                "The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
                "The session has been invalidated because the user has changed the password.",
                "Session does not match current stored session. This may be because the user changed the password since the time the session was created or Facebook has changed the session for security reasons.",
            ];
            (texts[w.rng.below(texts.len())].into(), 460)
        }
        Kill::Invalidated(467) => {
            let texts = [
                "The session is invalid because the user logged out.",
                "The session is invalid. This may be due to a system error.",
            ];
            (texts[w.rng.below(texts.len())].into(), 467)
        }
        Kill::Invalidated(458) => (
            format!("The user has not authorized application {app_id}."),
            458,
        ),
        Kill::Invalidated(459) => (
            "You cannot access the app till you log in to www.facebook.com and follow the instructions given.".into(),
            459,
        ),
        Kill::Invalidated(464) => (
            "Sessions for the user are not allowed because the user is not a confirmed user."
                .into(),
            464,
        ),
        Kill::Invalidated(466) => (
            "The session was invalidated explicitly using an API call.".into(),
            466,
        ),
        Kill::Invalidated(493) => (
            "The access token is invalid since the user hasn't engaged the app in longer than 90 days.".into(),
            493,
        ),
        Kill::Invalidated(s) => ("The session has been invalidated.".into(), s),
    };
    (format!("{P}{text}"), sub)
}

/// The text of code 190/463, with both times in Pacific time as Meta writes them.
pub(super) fn expired_message(expires_at: i64, now: i64) -> String {
    format!(
        "Error validating access token: Session has expired on {}. The current time is {}.",
        pacific(expires_at),
        pacific(now)
    )
}

/// The envelope for a known token that no longer works; `None` while it is valid.
pub(super) fn dead_token_error(w: &mut World, rec: &TokenRec) -> Option<GraphError> {
    let now = w.now();
    match rec.status(now) {
        Status::Valid => None,
        Status::Expired => {
            Some(GraphError::new(190, expired_message(rec.expires_at, now)).sub(463))
        }
        Status::Dead(kill) => {
            let (msg, sub) = kill_message(w, kill, &rec.app_id);
            Some(GraphError::new(190, msg).sub(sub))
        }
    }
}

/// `APP_ID|SECRET`, split.
pub(super) fn parse_app_token(t: &str) -> Option<(&str, &str)> {
    let (id, secret) = t.split_once('|')?;
    (!id.is_empty() && id.bytes().all(|c| c.is_ascii_digit())).then_some((id, secret))
}

/// Checks `appsecret_proof` (and the time-stamped form with `appsecret_time`).
pub(super) fn check_proof(
    w: &World,
    call: &Call,
    token: &str,
    app_id: &str,
    required: bool,
) -> Result<(), GraphError> {
    let Some(proof) = call.param("appsecret_proof") else {
        return if required {
            Err(GraphError::method(
                100,
                "API calls from the server require an appsecret_proof argument",
            ))
        } else {
            Ok(())
        };
    };
    let invalid =
        || GraphError::method(100, "Invalid appsecret_proof provided in the API argument");
    let secret = Secret::new(w.secret_of(app_id).ok_or_else(invalid)?);
    let expected = match call.param("appsecret_time") {
        Some(t) => {
            let t: i64 = t.trim().parse().map_err(|_| invalid())?;
            if (w.now() - t).abs() > PROOF_TIME_WINDOW {
                return Err(invalid());
            }
            appsecret_proof(&secret, &format!("{token}|{t}"))
        }
        None => appsecret_proof(&secret, token),
    };
    if proof.trim().eq_ignore_ascii_case(&expected) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// Who made a call.
pub(super) enum Caller {
    /// The app itself (`APP_ID|SECRET`).
    App,
    /// A user, system-user or page token, valid right now.
    Token(TokenRec),
}

/// Authenticates a call that carries an access token. `whatsapp` endpoints answer 190 with
/// HTTP 401; `force_proof` makes the proof mandatory whatever the app setting (minting).
pub(super) fn authenticate(
    w: &mut World,
    call: &Call,
    whatsapp: bool,
    force_proof: bool,
) -> Result<Caller, GraphError> {
    let status_190 = if whatsapp { 401 } else { 400 };
    let token = call.token().ok_or_else(no_token)?.to_string();
    if let Some((id, secret)) = parse_app_token(&token) {
        if w.app(id).is_none() {
            return Err(bad_app_id());
        }
        if w.secret_of(id) != Some(secret) {
            return Err(bad_signature().status(status_190));
        }
        check_proof(w, call, &token, id, false)?;
        return Ok(Caller::App);
    }
    let Some(rec) = w.tokens.get(&token).cloned() else {
        return Err(unparseable(&token, whatsapp).status(status_190));
    };
    if rec.kind.other_host() {
        // An Instagram Login or Threads token given to graph.facebook.com.
        return Err(super::kinds::cannot_parse().status(status_190));
    }
    let required = force_proof || w.app(&rec.app_id).is_some_and(|a| a.require_app_secret);
    check_proof(w, call, &token, &rec.app_id, required)?;
    if let Some(e) = dead_token_error(w, &rec) {
        return Err(e.status(status_190));
    }
    Ok(Caller::Token(rec))
}

/// Checks `client_id` / `client_secret` and returns the app id.
pub(super) fn client_app(w: &World, call: &Call) -> Result<String, GraphError> {
    let id = call
        .param("client_id")
        .ok_or_else(|| missing_param("client_id"))?;
    if w.app(id).is_none() {
        return Err(bad_app_id());
    }
    match call.param("client_secret") {
        Some(s) if w.secret_of(id) == Some(s) => Ok(id.to_string()),
        _ => Err(bad_client_secret()),
    }
}
