//! Ad accounts (Marketing API): `GET /act_{id}?fields=account_status,name`, answered to a
//! token with `ads_read` or `ads_management` (code 200 otherwise), with the account's
//! `account_status` as the world holds it (`Sandbox::set_ad_account_status`). An unknown
//! account is Graph's "Unsupported get request" (code 100, subcode 33).

use serde_json::json;

use super::auth::{Caller, authenticate};
use super::call::Call;
use super::envelope::{GraphError, Reply, unsupported};
use crate::sandbox::world::World;

/// Whether `call` reads an ad account.
pub(super) fn is_ad_account(call: &Call) -> bool {
    call.segments.len() == 1 && call.segments[0].starts_with("act_")
}

/// `GET /act_{id}`.
pub(super) fn read(w: &mut World, call: &Call) -> Result<Reply, GraphError> {
    let node = call.segments[0].clone();
    let method = call.method.to_ascii_lowercase();
    if !call.is_get() {
        return Err(unsupported(&method, &node));
    }
    let rec = match authenticate(w, call, false, false)? {
        Caller::Token(rec) => rec,
        Caller::App => return Err(unsupported(&method, &node)),
    };
    let id = node.trim_start_matches("act_");
    let Some(status) = w.ad_accounts.get(id).copied() else {
        return Err(unsupported(&method, &node));
    };
    if !(rec.has_scope("ads_read") || rec.has_scope("ads_management")) {
        return Err(GraphError::new(
            200,
            "(#200) Ad account owner has NOT grant ads_management or ads_read permission",
        ));
    }
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(node));
    for f in call.param("fields").unwrap_or("").split(',').map(str::trim) {
        match f {
            "account_status" => {
                out.insert(f.into(), json!(status));
            }
            "name" => {
                out.insert(f.into(), json!("Lucky Shrub Ads"));
            }
            _ => {}
        }
    }
    Ok(Reply::json(200, &serde_json::Value::Object(out)))
}
