//! The WhatsApp asset endpoints: reads of a phone number, a WABA (or an app or system user) with
//! `fields=`, a WABA's `phone_numbers`, and `{phone-number-id}/messages` (text and template,
//! the recipient allow-list). A caller needs the scope and the WABA among its targets.
//!
//! The `business_throttle_until` quirk (code 80008) is applied here, to these endpoints only.
//! Authentication is `auth.rs`; the token endpoints are `tokens.rs`.

use serde_json::{Value, json};

use super::auth::{Caller, authenticate};
use super::call::Call;
use super::envelope::{
    GraphError, Reply, business_use_case_usage, missing_param, permissions_error, unsupported,
};
use crate::sandbox::scenario::WHATSAPP_SCOPES;
use crate::sandbox::world::{SentMessage, World};
use crate::secret::Fingerprint;

fn missing_scope() -> GraphError {
    GraphError::new(
        10,
        "(#10) Application does not have permission for this action",
    )
}

/// Parses `fields=` against the fields a node has; `None` when none were asked for.
fn requested_fields(
    call: &Call,
    node: &str,
    known: &[&str],
) -> Result<Option<Vec<String>>, GraphError> {
    let Some(f) = call.param("fields").filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    let fields: Vec<String> = f.split(',').map(|x| x.trim().to_string()).collect();
    for x in &fields {
        if !known.contains(&x.as_str()) {
            return Err(GraphError::new(
                100,
                format!("(#100) Tried accessing nonexisting field ({x}) on node type ({node})"),
            ));
        }
    }
    Ok(Some(fields))
}

fn pick(all: Value, fields: Option<Vec<String>>) -> Value {
    let (Some(fields), Value::Object(map)) = (fields, &all) else {
        return all;
    };
    let mut out = serde_json::Map::new();
    for f in fields.iter().map(String::as_str).chain(["id"]) {
        if let Some(v) = map.get(f) {
            out.insert(f.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// Business-use-case throttling (the `business_throttle_until` quirk): calls on the business's
/// assets made with a user or system-user token are refused with code 80008 and
/// `X-Business-Use-Case-Usage` giving `estimated_time_to_regain_access` in minutes. No
/// `Retry-After`: Meta documents none.
fn business_throttle(w: &World, caller: &Caller) -> Result<(), GraphError> {
    let until = w.scenario.quirks.business_throttle_until;
    let now = w.now();
    if !matches!(caller, Caller::Token(_)) || until <= now {
        return Ok(());
    }
    let minutes = ((until - now + 59) / 60).unsigned_abs();
    let usage = business_use_case_usage(w, minutes, 12, 20);
    Err(GraphError::new(
        80008,
        "(#80008) There have been too many calls to this WhatsApp Business account. Wait a bit and try again.",
    )
    .header("x-business-use-case-usage", usage))
}

/// Checks that a caller may use a WABA with `scope`.
fn check_asset(caller: &Caller, waba: &str, scope: &str) -> Result<(), GraphError> {
    match caller {
        Caller::App => Err(permissions_error()),
        Caller::Token(rec) if !rec.has_scope(scope) => Err(missing_scope()),
        Caller::Token(rec) if !rec.wabas.iter().any(|w| w == waba) => Err(permissions_error()),
        Caller::Token(_) => Ok(()),
    }
}

const PHONE_FIELDS: [&str; 6] = [
    "id",
    "display_phone_number",
    "verified_name",
    "quality_rating",
    "code_verification_status",
    "name_status",
];

/// `GET /{id}`: a WABA or phone number (with `fields=`), or an app or system user (id and name).
pub(super) fn read_object(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let id = call.segments.first().cloned().unwrap_or_default();
    if !call.is_get() {
        return Err(unsupported(&call.method.to_ascii_lowercase(), &id));
    }
    let caller = authenticate(w, call, false, false)?;
    business_throttle(w, &caller)?;
    for waba in &w.scenario.wabas {
        if waba.id == id {
            check_asset(&caller, &waba.id, WHATSAPP_SCOPES[0])?;
            let fields = requested_fields(
                call,
                "WhatsAppBusinessAccount",
                &["id", "name", "timezone_id", "account_review_status"],
            )?;
            let all = json!({"id": waba.id, "name": waba.name, "timezone_id": "1", "account_review_status": "APPROVED"});
            return Ok(Reply::json(200, &pick(all, fields)));
        }
        if let Some(p) = waba.phones.iter().find(|p| p.id == id) {
            check_asset(&caller, &waba.id, WHATSAPP_SCOPES[0])?;
            let fields = requested_fields(call, "WhatsAppBusinessPhoneNumber", &PHONE_FIELDS)?;
            let all = json!({
                "id": p.id,
                "display_phone_number": p.display_phone_number,
                "verified_name": p.verified_name,
                "quality_rating": p.quality_rating,
                "code_verification_status": p.code_verification_status,
                "name_status": p.name_status,
            });
            return Ok(Reply::json(200, &pick(all, fields)));
        }
    }
    if let Some(a) = w.app(&id) {
        return Ok(Reply::json(200, &json!({"id": a.id, "name": a.name})));
    }
    if let Some(u) = w.scenario.system_users.iter().find(|u| u.id == id) {
        return Ok(Reply::json(200, &json!({"id": u.id, "name": u.name})));
    }
    Err(unsupported("get", &id))
}

/// `GET /{waba-id}/phone_numbers`, with paging cursors.
pub(super) fn phone_numbers(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let id = call.segments[0].clone();
    if !call.is_get() {
        return Err(unsupported(&call.method.to_ascii_lowercase(), &id));
    }
    let caller = authenticate(w, call, false, false)?;
    business_throttle(w, &caller)?;
    if w.scenario
        .wabas
        .iter()
        .any(|wb| wb.phones.iter().any(|p| p.id == id))
    {
        // A phone-number id where the WABA id belongs: the node exists, the edge does not.
        return Err(GraphError::new(
            100,
            "(#100) Tried accessing nonexisting field (phone_numbers) on node type (WhatsAppBusinessPhoneNumber)",
        ));
    }
    let Some(waba) = w.scenario.wabas.iter().find(|wb| wb.id == id).cloned() else {
        return Err(unsupported("get", &id));
    };
    check_asset(&caller, &waba.id, WHATSAPP_SCOPES[0])?;
    let data: Vec<Value> = waba
        .phones
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "display_phone_number": p.display_phone_number,
                "verified_name": p.verified_name,
                "quality_rating": p.quality_rating,
            })
        })
        .collect();
    let before = w.rng.alnum(64);
    let after = w.rng.alnum(64);
    Ok(Reply::json(
        200,
        &json!({"data": data, "paging": {"cursors": {"before": before, "after": after}}}),
    ))
}

/// Reads a message field that may come as JSON or as a form value holding JSON.
fn message_body(call: &Call) -> Value {
    if let Some(v) = &call.json {
        return v.clone();
    }
    let mut m = serde_json::Map::new();
    for (k, v) in &call.params {
        let parsed = match k.as_str() {
            "text" | "template" => serde_json::from_str(v).unwrap_or(json!(v)),
            _ => json!(v),
        };
        m.insert(k.clone(), parsed);
    }
    Value::Object(m)
}

/// `POST /{phone-number-id}/messages`: a text or template message, recorded for the tests.
pub(super) fn messages(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let phone_id = call.segments[0].clone();
    if call.is_get() {
        return Err(unsupported("get", &format!("{phone_id}/messages")));
    }
    let caller = authenticate(w, call, true, false)?;
    business_throttle(w, &caller)?;
    let Some(waba) = w
        .scenario
        .wabas
        .iter()
        .find(|wb| wb.phones.iter().any(|p| p.id == phone_id))
        .map(|wb| wb.id.clone())
    else {
        return Err(unsupported("post", &phone_id));
    };
    check_asset(&caller, &waba, WHATSAPP_SCOPES[1])?;
    let body = message_body(call);
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    if s("messaging_product").as_deref() != Some("whatsapp") {
        return Err(missing_param("messaging_product"));
    }
    let to = s("to")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing_param("to"))?;
    let digits_of = |s: &str| -> String { s.chars().filter(char::is_ascii_digit).collect() };
    let digits = digits_of(&to);
    let recipients = &w.scenario.recipients;
    // Compare digits only: `+1 555-000-1111` in a scenario means 15550001111.
    if !recipients.is_empty() && !recipients.iter().any(|r| digits_of(r) == digits) {
        return Err(
            GraphError::new(131030, "(#131030) Recipient phone number not in allowed list").details(
                "Recipient phone number not in allowed list: Add recipient phone number to recipient list and try again.",
            ),
        );
    }
    let kind = s("type").unwrap_or_else(|| "text".into());
    let Content {
        text,
        template,
        language,
    } = message_content(w, &kind, &body)?;
    let id = format!("wamid.HBgL{}", w.rng.alnum(48));
    let token_fingerprint = call
        .token()
        .map(|t| Fingerprint::of(t).to_string())
        .unwrap_or_default();
    let sent_at = w.now();
    w.messages.push(SentMessage {
        id: id.clone(),
        phone_number_id: phone_id,
        to: to.clone(),
        kind,
        body: text,
        template,
        language,
        sent_at,
        token_fingerprint,
    });
    w.stats.messages_sent += 1;
    Ok(Reply::json(
        200,
        &json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": digits}],
            "messages": [{"id": id}],
        }),
    ))
}

/// What a message carries: its text, or a template and its language.
struct Content {
    text: Option<String>,
    template: Option<String>,
    language: Option<String>,
}

/// A message's content by its `type`: the text, or a template (which must exist in that
/// language) and its language.
fn message_content(w: &World, kind: &str, body: &Value) -> Result<Content, GraphError> {
    match kind {
        "text" => {
            let text = body
                .pointer("/text/body")
                .and_then(Value::as_str)
                .ok_or_else(|| missing_param("text['body']"))?;
            Ok(Content {
                text: Some(text.to_string()),
                template: None,
                language: None,
            })
        }
        "template" => {
            let name = body
                .pointer("/template/name")
                .and_then(Value::as_str)
                .ok_or_else(|| missing_param("template['name']"))?
                .to_string();
            let lang = body
                .pointer("/template/language/code")
                .and_then(Value::as_str)
                .unwrap_or("en_US")
                .to_string();
            let known = w
                .scenario
                .templates
                .iter()
                .any(|t| t.name == name && t.language == lang);
            if !known {
                return Err(GraphError::new(
                    132001,
                    "(#132001) Template name does not exist in the translation",
                )
                .details(format!("template name ({name}) does not exist in {lang}")));
            }
            Ok(Content {
                text: None,
                template: Some(name),
                language: Some(lang),
            })
        }
        other => Err(GraphError::new(
            100,
            format!("(#100) Param type must be one of {{text, template}}, got {other}"),
        )),
    }
}
