//! `kind = "threads"`: the Threads host of the sandbox (graph.threads.net's `me` and
//! `refresh_access_token` with `th_refresh_token`), and a Threads token kept alive through the
//! real binary with the same steps and failure modes as an Instagram one.

use serde_json::Value;
use tokenwarden::sandbox::{self, Sandbox, TokenSpec};

use crate::kinds_instagram::{a_kind_lives_through_renewal, current_of, kind_workspace};
use crate::util::sandbox;

async fn th_get(sb: &Sandbox, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}/threads/{path}", sb.base_url()))
        .query(query)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_threads_host_answers_me_and_refresh_with_its_own_grant() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::threads().issued_ago(2 * 86_400));
    let ig = sb.issue_token(TokenSpec::instagram().issued_ago(2 * 86_400));
    assert!(old.starts_with("TH"));
    let (s, me) = th_get(
        &sb,
        "v1.0/me",
        &[("fields", "id,username"), ("access_token", &old)],
    )
    .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["id"], sandbox::DEMO_THREADS_USER_ID);
    assert_eq!(me["username"], sandbox::DEMO_THREADS_USERNAME);
    let (s, e) = th_get(&sb, "me", &[("fields", "user_id"), ("access_token", &old)]).await;
    assert_eq!(
        (s, e["error"]["code"].as_u64()),
        (400, Some(100)),
        "Instagram's field is not Threads': {e}"
    );
    let (s, e) = th_get(&sb, "me", &[("fields", "id"), ("access_token", &ig)]).await;
    assert_eq!(
        (s, e["error"]["code"].as_u64()),
        (400, Some(190)),
        "an Instagram token on Threads: {e}"
    );
    let (s, e) = th_get(
        &sb,
        "refresh_access_token",
        &[("grant_type", "ig_refresh_token"), ("access_token", &old)],
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_u64()), (400, Some(100)), "{e}");
    let (s, r) = th_get(
        &sb,
        "refresh_access_token",
        &[("grant_type", "th_refresh_token"), ("access_token", &old)],
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert!(r["access_token"].as_str().unwrap().starts_with("TH"));
}

#[tokio::test]
async fn a_threads_token_is_probed_renewed_validated_and_delivered() {
    a_kind_lives_through_renewal("threads", TokenSpec::threads(), "authorize the app again").await;
}

#[tokio::test]
async fn an_expired_threads_token_is_not_refreshed() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::threads().issued_ago(30 * 86_400));
    let ws = kind_workspace(&sb, "threads", &old);
    sb.advance_clock(31 * 86_400);
    let r = crate::util::tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("authorize the app again"), "{r:?}");
    assert_eq!(sb.stats().refreshed, 0);
    assert_eq!(current_of(&ws).await, old);
}

#[tokio::test]
async fn a_dry_run_describes_the_kinds_own_renewal_and_no_revoke() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::threads().issued_ago(30 * 86_400));
    let ws = kind_workspace(&sb, "threads", &old);
    let d = crate::util::tw(
        &ws.config,
        &["rotate", "--token", "shop-ig", "--dry-run"],
        &[],
        None,
    )
    .await;
    assert_eq!(d.code, 0, "{d:?}");
    assert!(
        d.stdout.contains("graph.threads.net") && d.stdout.contains("th_refresh_token"),
        "{d:?}"
    );
    assert!(d.stdout.contains("GET /me on graph.threads.net"), "{d:?}");
    assert!(
        d.stdout
            .contains("Meta offers no revoke for threads tokens"),
        "{d:?}"
    );
    assert!(!d.stdout.contains("WhatsApp"), "{d:?}");
    assert_eq!(sb.stats().refreshed, 0, "a dry run refreshes nothing");
}

#[tokio::test]
async fn a_threads_token_whose_account_is_gone_is_dead_and_needs_a_new_authorization() {
    crate::kinds_instagram::a_kind_whose_account_is_gone(
        "threads",
        TokenSpec::threads(),
        "authorize the app again",
    )
    .await;
}

#[tokio::test]
async fn a_threads_token_given_to_the_wrong_host_is_named_as_such() {
    let sb = sandbox().await;
    // A Threads token configured as a WhatsApp one: Graph cannot parse it.
    let th = sb.issue_token(TokenSpec::threads());
    let ws = kind_workspace(&sb, "whatsapp", &th);
    let c = crate::util::tw(&ws.config, &["check"], &[], None).await;
    assert!(
        c.stdout.contains("wrong host") && c.stdout.contains("kind = \"threads\""),
        "{c:?}"
    );
    // A Graph token configured as a Threads one: the Threads host cannot parse it.
    let wa = sb.issue_token(TokenSpec::system_user_60d());
    let ws = kind_workspace(&sb, "threads", &wa);
    let c = crate::util::tw(&ws.config, &["check"], &[], None).await;
    assert!(
        c.stdout.contains("wrong host") && c.stdout.contains("graph.threads.net"),
        "{c:?}"
    );
    let r = crate::util::tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(sb.stats().refreshed, 0, "{r:?}");
    crate::util::assert_no_leak(&c.all(), &[&th, &wa], "check output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_threads_app_secret_is_one_own_credentials_alert_per_app() {
    crate::kinds_instagram::a_reset_app_secret_is_one_alert("threads", TokenSpec::threads()).await;
}
