//! `kind = "instagram"`: the Instagram host of the sandbox (graph.instagram.com's `me` and
//! `refresh_access_token`, as strict as Meta's pages), and an Instagram Login token kept alive
//! through the real binary: inspect (probe), renew, validate, deliver, and its failure modes
//! (expired beyond refresh, invalidated, wrong host).

use serde_json::Value;
use tokenwarden::sandbox::{self, Sandbox, TokenSpec};

use crate::util::sandbox;

/// A GET on the sandbox's Instagram host (`/instagram/...`); the status and the JSON body.
async fn ig_get(sb: &Sandbox, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/instagram/{path}", sb.base_url()))
        .query(query)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_instagram_host_answers_me_and_refresh_as_strictly_as_its_pages() {
    let sb = sandbox().await;
    let fresh = sb.issue_token(TokenSpec::instagram());
    let old = sb.issue_token(TokenSpec::instagram().issued_ago(30 * 86_400));
    assert!(
        fresh.starts_with("IG"),
        "Instagram Login tokens carry Meta's IG prefix"
    );

    // The probe: documented fields only, token in the query only.
    let (s, me) = ig_get(
        &sb,
        "v21.0/me",
        &[("fields", "user_id,username"), ("access_token", &old)],
    )
    .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["user_id"], sandbox::DEMO_INSTAGRAM_USER_ID);
    assert_eq!(me["username"], sandbox::DEMO_INSTAGRAM_USERNAME);
    let (s, e) = ig_get(
        &sb,
        "me",
        &[("fields", "user_id,phone"), ("access_token", &old)],
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_u64()), (400, Some(100)), "{e}");
    let header_only = reqwest::Client::new()
        .get(format!("{}/instagram/me", sb.base_url()))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header_only.status().as_u16(),
        400,
        "the documented call carries the token in the query"
    );

    // Refresh: its own grant type, at least 24 hours old.
    let (s, e) = ig_get(
        &sb,
        "refresh_access_token",
        &[("grant_type", "fb_exchange_token"), ("access_token", &old)],
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_u64()), (400, Some(100)), "{e}");
    let (s, e) = ig_get(
        &sb,
        "refresh_access_token",
        &[("grant_type", "ig_refresh_token"), ("access_token", &fresh)],
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_u64()),
        (400, Some(100)),
        "a token younger than 24 hours is refused: {e}"
    );
    let (s, r) = ig_get(
        &sb,
        "refresh_access_token",
        &[("grant_type", "ig_refresh_token"), ("access_token", &old)],
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["token_type"], "bearer");
    let expires_in = r["expires_in"].as_i64().unwrap();
    assert!(
        (59 * 86_400..=60 * 86_400 + 3600).contains(&expires_in),
        "{expires_in}"
    );
    let new = r["access_token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let (s, _) = ig_get(&sb, "me", &[("fields", "user_id"), ("access_token", &old)]).await;
    assert_eq!(s, 200, "the old token keeps working until its own expiry");

    // Expired: 190/463 on the probe, and no refresh.
    sb.advance_clock(31 * 86_400);
    let (s, e) = ig_get(&sb, "me", &[("fields", "user_id"), ("access_token", &old)]).await;
    assert_eq!(
        (
            s,
            e["error"]["code"].as_u64(),
            e["error"]["error_subcode"].as_u64()
        ),
        (400, Some(190), Some(463)),
        "{e}"
    );
    let (s, e) = ig_get(
        &sb,
        "refresh_access_token",
        &[("grant_type", "ig_refresh_token"), ("access_token", &old)],
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_u64()),
        (400, Some(190)),
        "an expired token cannot be refreshed: {e}"
    );
}

#[tokio::test]
async fn graph_and_instagram_cannot_parse_each_others_tokens() {
    let sb = sandbox().await;
    let ig = sb.issue_token(TokenSpec::instagram());
    let wa = sb.issue_token(TokenSpec::system_user_60d());
    // A Graph token on the Instagram host.
    let (s, e) = ig_get(&sb, "me", &[("fields", "user_id"), ("access_token", &wa)]).await;
    assert_eq!((s, e["error"]["code"].as_u64()), (400, Some(190)), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cannot parse access token")
    );
    // An Instagram token on Graph: debug_token says it cannot parse it, a read refuses it.
    let graph = crate::util::graph_client(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        1,
        std::time::Duration::from_secs(5),
        None,
    );
    let info = graph
        .debug_token(&tokenwarden::secret::Secret::new(ig.clone()))
        .await
        .unwrap();
    let why = info
        .invalid_reason()
        .expect("Graph cannot parse an Instagram token");
    assert_eq!(why.code, 190);
    assert!(why.message.contains("Cannot parse access token"), "{why:?}");
    let r = reqwest::Client::new()
        .get(format!(
            "{}/v21.0/{}",
            sb.base_url(),
            sandbox::DEMO_PHONE_NUMBER_ID
        ))
        .bearer_auth(&ig)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], 190, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cannot parse access token")
    );
}
