//! `kind = "marketing"`: a Marketing API token checked with `debug_token`, an ads scope and each
//! configured ad account's `account_status`, renewed by the same refresh as today (the old token
//! revoked), with its failure modes: an ad account not running (the account's alert, not a dead
//! token), a token without ads scopes, a non-expiring token never traded for a 60-day one, and an
//! invalidated one.

use serde_json::Value;
use tokenwarden::sandbox::{self, Sandbox, TokenSpec};

use crate::util::{is_valid, sandbox, tw};

struct AdsWorkspace {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn ads_workspace(sb: &Sandbox, value: &str, extra: &str) -> AdsWorkspace {
    use tokenwarden::store::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("app-secret");
    std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).unwrap();
    let text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{a}\"\napp_secret = {{ file = \"{s}\" }}\nbase_url = \"{b}\"\nattempts = 2\nretry_delay = \"10ms\"\ntimeout = \"5s\"\n\n[[token]]\nname = \"ads\"\nkind = \"marketing\"\nad_accounts = [\"act_{acct}\"]\nsource = \"refresh\"\n{extra}",
        d = dir.path().display(),
        a = sandbox::DEMO_APP_ID,
        s = secret_file.display(),
        b = sb.base_url(),
        acct = sandbox::DEMO_AD_ACCOUNT_ID,
    );
    FileStore::new(dir.path().join("tokens.json"), "ads".into())
        .import_current(
            &tokenwarden::secret::Secret::new(value),
            jiff::Timestamp::now(),
        )
        .unwrap();
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    AdsWorkspace { dir, config }
}

async fn current_of(ws: &AdsWorkspace) -> String {
    use tokenwarden::store::SecretStore;
    tokenwarden::store::file::FileStore::new(ws.dir.path().join("tokens.json"), "ads".into())
        .current()
        .await
        .unwrap()
        .expose()
        .to_string()
}

#[tokio::test]
async fn a_marketing_token_is_proven_by_its_ad_accounts_and_refreshed_as_today() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::marketing().issued_ago(45 * 86_400));
    let ws = ads_workspace(&sb, &old, "revoke_after = \"0s\"\n");
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 0, "{c:?}");
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    assert_eq!(
        (line["kind"].as_str(), line["state"].as_str()),
        (Some("marketing"), Some("ok")),
        "{line}"
    );

    // Refreshed, validated (ads scope kept, the account read), promoted, the old one revoked.
    let r = tw(&ws.config, &["rotate", "--token", "ads"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let new = current_of(&ws).await;
    assert_ne!(new, old);
    assert_eq!((sb.stats().refreshed, sb.stats().revoked), (1, 1));
    assert!(is_valid(&sb, &new).await && !is_valid(&sb, &old).await);

    // The ad account disabled: the account's trouble, named, not a dead token.
    sb.set_ad_account_status(sandbox::DEMO_AD_ACCOUNT_ID, 2);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(
        c.stdout.contains("not running (account_status 2)") && c.stdout.contains("not the token's"),
        "{c:?}"
    );
    let d = tw(&ws.config, &["doctor"], &[], None).await;
    assert!(d.stdout.contains("Ads Manager"), "{d:?}");
    sb.set_ad_account_status(sandbox::DEMO_AD_ACCOUNT_ID, 9);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 0, "in grace period is running: {c:?}");

    // Invalidated: dead.
    sb.invalidate(&new, 460);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(!c.stdout.contains("ad account"), "{c:?}");
    for out in [c.all(), r.all(), d.all()] {
        crate::util::assert_no_leak(&out, &[&old, &new], "output");
    }
}

#[tokio::test]
async fn a_marketing_token_without_ads_scopes_or_that_never_expires_is_handled_as_such() {
    let sb = sandbox().await;
    // A WhatsApp token configured as a Marketing one.
    let wa = sb.issue_token(crate::util::prod_spec());
    let ws = ads_workspace(&sb, &wa, "");
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(
        c.stdout.contains("lacks ads_read and ads_management"),
        "{c:?}"
    );
    // A non-expiring system-user token: never traded for a 60-day one.
    let never = sb.issue_token(TokenSpec::marketing().lifetime(sandbox::Lifetime::Never));
    let ws = ads_workspace(&sb, &never, "");
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 0, "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "ads"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("never expires"), "{r:?}");
    assert_eq!(sb.stats().refreshed, 0);
    assert_eq!(current_of(&ws).await, never);
}

/// The rest of a Marketing token's failure modes: a closed ad account (the account's trouble),
/// a token expired beyond refresh (dead, never sent to the exchange), and a token of another
/// product given to Graph (the wrong host, named).
#[tokio::test]
async fn a_marketing_token_with_a_closed_account_expired_or_on_the_wrong_host_is_named() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::marketing().issued_ago(45 * 86_400));
    let ws = ads_workspace(&sb, &old, "");
    sb.set_ad_account_status(sandbox::DEMO_AD_ACCOUNT_ID, 101);
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(
        c.stdout.contains("account_status 101") && c.stdout.contains("not the token's"),
        "{c:?}"
    );
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    assert_eq!(line["state"], "critical", "{line}");
    assert!(
        line["summary"]
            .as_str()
            .unwrap()
            .starts_with("valid but unusable"),
        "{line}"
    );
    sb.set_ad_account_status(sandbox::DEMO_AD_ACCOUNT_ID, 1);

    // Expired beyond refresh: dead, and Meta is not asked to exchange it.
    sb.advance_clock(16 * 86_400);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(c.stdout.contains("expired"), "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "ads"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(sb.stats().refreshed, 0, "{r:?}");
    assert_eq!(current_of(&ws).await, old);

    // An Instagram token configured as a Marketing one: the wrong host.
    let ig = sb.issue_token(TokenSpec::instagram());
    let ws = ads_workspace(&sb, &ig, "");
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert!(
        c.stdout.contains("wrong host") && c.stdout.contains("kind = \"instagram\""),
        "{c:?}"
    );
    for out in [c.all(), r.all()] {
        crate::util::assert_no_leak(&out, &[&old, &ig], "output");
    }
}
