//! `kind = "page"`: a Facebook Page token (Pages API, Messenger) checked with `debug_token`
//! and a read of its Page (and its app subscription), renewed by taking the Page token again
//! from a long-lived user token, with its failure modes: invalidated (the Page token dies
//! with a session), the user token dead too (a new login), a lost asset (another Page), the
//! Messenger subscription gone, and a policy refusal that is not a token problem.

use serde_json::Value;
use tokenwarden::sandbox::{self, Sandbox, TokenSpec};

use crate::util::{sandbox, tw};

/// A workspace whose one token `shop-page` is a Page token of the demo Page, its user token
/// (for renewal) in a private file, delivered to a dotenv file; `extra` goes into `page = {}`.
struct PageWorkspace {
    dir: tempfile::TempDir,
    _app: tempfile::TempDir,
    config: std::path::PathBuf,
    env_file: std::path::PathBuf,
}

fn page_workspace(
    sb: &Sandbox,
    value: &str,
    user: &str,
    page_id: &str,
    extra: &str,
) -> PageWorkspace {
    use tokenwarden::store::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let app = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("app-secret");
    std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).unwrap();
    let user_file = dir.path().join("user-token");
    std::fs::write(&user_file, user).unwrap();
    let env_file = app.path().join("page.env");
    std::fs::write(&env_file, "OTHER=kept\n").unwrap();
    let text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{a}\"\napp_secret = {{ file = \"{s}\" }}\nbase_url = \"{b}\"\nattempts = 2\nretry_delay = \"10ms\"\ntimeout = \"5s\"\n\n[[token]]\nname = \"shop-page\"\nkind = \"page\"\nsource = \"refresh\"\npage = {{ id = \"{page_id}\", user_token = {{ file = \"{u}\" }}{extra} }}\n[[token.target]]\nname = \"bot\"\nkind = \"dotenv\"\npath = \"{e}\"\nkey = \"PAGE_TOKEN\"\nreload = [\"/bin/true\"]\n",
        d = dir.path().display(),
        a = sandbox::DEMO_APP_ID,
        s = secret_file.display(),
        b = sb.base_url(),
        u = user_file.display(),
        e = env_file.display(),
    );
    FileStore::new(dir.path().join("tokens.json"), "shop-page".into())
        .import_current(
            &tokenwarden::secret::Secret::new(value),
            jiff::Timestamp::now(),
        )
        .unwrap();
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    PageWorkspace {
        dir,
        _app: app,
        config,
        env_file,
    }
}

async fn current_of(ws: &PageWorkspace) -> String {
    use tokenwarden::store::SecretStore;
    tokenwarden::store::file::FileStore::new(ws.dir.path().join("tokens.json"), "shop-page".into())
        .current()
        .await
        .unwrap()
        .expose()
        .to_string()
}

fn check_json(out: &str) -> Value {
    serde_json::from_str::<Value>(out).unwrap()[0].clone()
}

#[tokio::test]
async fn a_page_token_is_proven_by_its_page_and_retaken_from_the_user_token() {
    let sb = sandbox().await;
    let user = sb.issue_token(TokenSpec::user());
    let old = sb.issue_token(TokenSpec::page().issued_ago(50 * 86_400));
    let ws = page_workspace(
        &sb,
        &old,
        &user,
        sandbox::DEMO_PAGE_ID,
        ", messenger = true",
    );

    // Never expires, but its data access lapses 90 days after issue: 40 days left. No
    // rotation period applies to a Page token unless it is set on the token.
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 0, "{c:?}");
    let line = check_json(&c.stdout);
    assert_eq!(line["kind"], "page", "{line}");
    let left = line["seconds_left"].as_i64().unwrap();
    assert!((39 * 86_400..=40 * 86_400 + 3600).contains(&left), "{line}");

    // Renewal: the Page token taken again from the user token, validated, delivered; no revoke.
    let r = tw(&ws.config, &["rotate", "--token", "shop-page"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let new = current_of(&ws).await;
    assert_ne!(new, old);
    let env = std::fs::read_to_string(&ws.env_file).unwrap();
    assert!(env.contains(&format!("PAGE_TOKEN={new}")) && env.contains("OTHER=kept"));
    assert_eq!(sb.stats().revoked, 0);
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 0, "{c:?}");

    // The Messenger subscription gone: unusable, said so.
    sb.set_page_subscribed(false);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(c.stdout.contains("not subscribed to the app"), "{c:?}");
    sb.set_page_subscribed(true);

    // "Never expires" still dies (a password change): dead; the user token still works, so a
    // rotation takes a new Page token.
    sb.invalidate(&new, 460);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "shop-page"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let third = current_of(&ws).await;
    assert!(third != new && third != old);

    // The user token dead too: only a new login helps, and the failure says so.
    sb.invalidate(&third, 460);
    sb.invalidate(&user, 460);
    let r = tw(&ws.config, &["rotate", "--token", "shop-page"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.all().contains("log in again with Facebook Login"),
        "{r:?}"
    );
    assert_eq!(current_of(&ws).await, third);
    for out in [c.all(), r.all()] {
        crate::util::assert_no_leak(&out, &[&old, &new, &third, &user], "output");
    }
}

#[tokio::test]
async fn a_page_token_for_another_page_or_of_another_kind_is_unusable_not_dead() {
    let sb = sandbox().await;
    let user = sb.issue_token(TokenSpec::user());
    let page = sb.issue_token(TokenSpec::page());
    // The asset lost: the configured Page is not the token's.
    let ws = page_workspace(&sb, &page, &user, "110200300400999", "");
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(
        c.stdout.contains("valid but unusable") && c.stdout.contains("110200300400999"),
        "{c:?}"
    );
    // A system-user token configured as a Page token.
    let su = sb.issue_token(TokenSpec::system_user_60d());
    let ws = page_workspace(&sb, &su, &user, sandbox::DEMO_PAGE_ID, "");
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert!(c.stdout.contains("not a Page token"), "{c:?}");
    // doctor: the Page check, no WhatsApp checks.
    let ws = page_workspace(
        &sb,
        &page,
        &user,
        sandbox::DEMO_PAGE_ID,
        ", messenger = true",
    );
    let d = tw(&ws.config, &["doctor", "--json"], &[], None).await;
    let report: Value = serde_json::from_str(&d.stdout).unwrap_or_else(|_| panic!("{d:?}"));
    let checks = report["tokens"][0]["checks"].as_array().unwrap().clone();
    let page_check = checks
        .iter()
        .find(|c| c["id"] == "page")
        .expect("a page check");
    assert_eq!(page_check["mark"], "pass", "{checks:?}");
    assert!(
        checks
            .iter()
            .all(|c| c["id"] != "scopes" && c["id"] != "waba" && c["id"] != "phone"),
        "{checks:?}"
    );
}

#[tokio::test]
async fn a_page_token_needs_its_page_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("t.toml");
    crate::util::write_private(
        &config,
        "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"p\"\nkind = \"page\"\nsource = \"refresh\"\n",
    );
    let r = tw(&config, &["config", "check"], &[("S", "x")], None).await;
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.all().contains("token[0].page"), "{r:?}");
}

#[test]
fn the_demo_shows_one_token_of_each_other_kind_checked_renewed_and_checked_again() {
    let r = crate::util::run(&["demo", "--pace", "0"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let part = r
        .stdout
        .split("Other kinds of token")
        .nth(1)
        .expect("the kinds part");
    let part = part.replace("deadline in 60 days", "deadline in 59 days");
    for want in [
        "OK shop-instagram [instagram]: valid; expiry unknown until tokenwarden refreshes it",
        "OK shop-threads [threads]: valid; expiry unknown",
        "OK shop-page [page]: deadline in 40 days",
        "shop-instagram: rotation",
        "Meta offers no revoke for instagram tokens",
        // About 60 days: `max_age` (60 days from the refresh) binds, so a second's delay
        // reads "59 days".
        "OK shop-instagram [instagram]: deadline in 59 days",
        "OK shop-threads [threads]: deadline in 59 days",
        "OK shop-page [page]: deadline in",
        "OK shop-ads [marketing]: deadline in",
        "OK customer-shop119 [whatsapp_business]",
        "customer-shop119: ",
        "the old one (fingerprint",
    ] {
        assert!(part.contains(want), "missing {want:?}: {part}");
    }
    // The demo keeps its files for reading; this test removes them.
    if let Some(dir) = r
        .stdout
        .split("The demo's files are kept in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Messenger's policy refusals (code 10/2018278 outside the messaging window, code 230 without
/// `pages_messaging`) are about what the Page may do: the token is neither dead nor unusable,
/// the daemon starts no rotation, sends no token alert, and its state names the refusal.
#[tokio::test]
async fn a_messenger_policy_refusal_is_not_a_token_error() {
    use crate::util::{Running, SinkOpts, SmtpSink, sections, subjects};
    use tokenwarden::sandbox::MessengerPolicy;

    let sb = sandbox().await;
    let user = sb.issue_token(TokenSpec::user());
    let page = sb.issue_token(TokenSpec::page());
    let ws = page_workspace(
        &sb,
        &page,
        &user,
        sandbox::DEMO_PAGE_ID,
        ", messenger = true",
    );
    for (policy, says) in [
        (MessengerPolicy::OutsideWindow, "outside of allowed window"),
        (MessengerPolicy::NoMessagingPermission, "pages_messaging"),
    ] {
        sb.set_page_policy(Some(policy));
        let c = tw(&ws.config, &["check", "--json"], &[], None).await;
        assert_ne!(c.code, 2, "{policy:?}: {c:?}");
        let line = check_json(&c.stdout);
        let text = line.to_string();
        assert!(
            text.contains("policy refusal, not a token problem"),
            "{line}"
        );
        assert!(text.contains(says), "{policy:?}: {line}");
        let state = line["state"].as_str().unwrap();
        assert!(
            !["invalid", "unusable", "expired"].contains(&state),
            "{policy:?}: {line}"
        );
    }

    // The daemon: a check under the refusal, then its loop; no rotation, no email about the
    // token being dead or unusable, and the state says what the refusal is.
    let sink = SmtpSink::start(&SinkOpts::default());
    let daemon_sections = sections(sink.port, "");
    let tail = &daemon_sections[daemon_sections.find("[schedule]").unwrap()..];
    let mut text = std::fs::read_to_string(&ws.config).unwrap();
    text.push_str(tail);
    crate::util::write_private(&ws.config, &text);
    sb.set_page_policy(Some(MessengerPolicy::OutsideWindow));
    let before = sb.stats();
    let clock = tokenwarden::daemon::OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    d.evaluate().await;
    d.stop().await;
    let after = sb.stats();
    assert_eq!(
        after.refreshed, before.refreshed,
        "no Page token was taken again"
    );
    assert_eq!(
        current_of(&ws).await,
        page,
        "no rotation replaced the token"
    );
    let state = std::fs::read_to_string(ws.dir.path().join("state.json")).unwrap();
    assert!(
        state.contains("outside of allowed window") && state.contains("policy refusal"),
        "{state}"
    );
    for s in subjects(&sink) {
        let lower = s.to_lowercase();
        assert!(
            !lower.contains("dead") && !lower.contains("invalid") && !lower.contains("unusable"),
            "{s}"
        );
    }
    crate::util::assert_no_leak(&state, &[&page, &user], "state");
}

/// The asset lost: the person lost their role on the Page. The Page token dies (Meta's 492,
/// "lost their role on the asset"), the user token may no longer take one, and the rotation
/// fails once saying a person with a task on the Page must log in again; nothing is replaced.
#[tokio::test]
async fn a_page_token_whose_person_lost_the_page_role_needs_a_new_login() {
    let sb = sandbox().await;
    let user = sb.issue_token(TokenSpec::user());
    let page = sb.issue_token(TokenSpec::page());
    let ws = page_workspace(&sb, &page, &user, sandbox::DEMO_PAGE_ID, "");
    sb.remove_page_role();
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(c.stdout.contains("lost their role"), "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "shop-page"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.all().contains("lost their task on the Page")
            && r.all().contains("log in again with Facebook Login"),
        "{r:?}"
    );
    assert_eq!(current_of(&ws).await, page);
    for out in [c.all(), r.all()] {
        crate::util::assert_no_leak(&out, &[&page, &user], "output");
    }
}

/// An Instagram Login token configured as a Page token is named as given to the wrong host.
#[tokio::test]
async fn an_instagram_token_configured_as_a_page_token_is_named_as_on_the_wrong_host() {
    let sb = sandbox().await;
    let user = sb.issue_token(TokenSpec::user());
    let ig = sb.issue_token(TokenSpec::instagram());
    let ws = page_workspace(&sb, &ig, &user, sandbox::DEMO_PAGE_ID, "");
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert!(
        c.stdout.contains("wrong host") && c.stdout.contains("kind = \"instagram\""),
        "{c:?}"
    );
    crate::util::assert_no_leak(&c.all(), &[&ig, &user], "check output");
}
