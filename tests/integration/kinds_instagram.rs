//! `kind = "instagram"`: the Instagram host of the sandbox (graph.instagram.com's `me` and
//! `refresh_access_token`, as strict as Meta's pages), and an Instagram Login token kept alive
//! through the real binary: inspect (probe), renew, validate, deliver, and its failure modes
//! (expired beyond refresh, invalidated, wrong host, the account gone).

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

/// A workspace whose one token `shop-ig` is of kind `kind`, renewed by refresh and delivered
/// to a dotenv file `ig.env` (key `IG_TOKEN`); the token's value is in the file store.
pub(crate) struct KindWorkspace {
    pub dir: tempfile::TempDir,
    /// Holds the application's env file, outside the state directory.
    pub _app: tempfile::TempDir,
    pub config: std::path::PathBuf,
    pub env_file: std::path::PathBuf,
}

pub(crate) fn kind_workspace(sb: &Sandbox, kind: &str, value: &str) -> KindWorkspace {
    kind_workspace_with(sb, kind, value, "")
}

/// [`kind_workspace`] with `top` (sections such as `[metrics]`) before the token.
pub(crate) fn kind_workspace_with(
    sb: &Sandbox,
    kind: &str,
    value: &str,
    top: &str,
) -> KindWorkspace {
    use tokenwarden::store::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("app-secret");
    std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).unwrap();
    let app = tempfile::tempdir().unwrap();
    let env_file = app.path().join("ig.env");
    std::fs::write(&env_file, "OTHER=kept\n").unwrap();
    let text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{app}\"\napp_secret = {{ file = \"{s}\" }}\nbase_url = \"{b}\"\nattempts = 2\nretry_delay = \"10ms\"\ntimeout = \"5s\"\n{top}\n[[token]]\nname = \"shop-ig\"\nkind = \"{kind}\"\nsource = \"refresh\"\n[[token.target]]\nname = \"site\"\nkind = \"dotenv\"\npath = \"{e}\"\nkey = \"IG_TOKEN\"\n",
        d = dir.path().display(),
        app = sandbox::DEMO_APP_ID,
        s = secret_file.display(),
        b = sb.base_url(),
        e = env_file.display(),
    );
    FileStore::new(dir.path().join("tokens.json"), "shop-ig".into())
        .import_current(
            &tokenwarden::secret::Secret::new(value),
            jiff::Timestamp::now(),
        )
        .unwrap();
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    KindWorkspace {
        dir,
        _app: app,
        config,
        env_file,
    }
}

/// The current value of `shop-ig` in the workspace's file store.
pub(crate) async fn current_of(ws: &KindWorkspace) -> String {
    use tokenwarden::store::SecretStore;
    tokenwarden::store::file::FileStore::new(ws.dir.path().join("tokens.json"), "shop-ig".into())
        .current()
        .await
        .unwrap()
        .expose()
        .to_string()
}

/// The whole life of one token of `kind` (`spec` issues it) against the sandbox: checked
/// through its host's `/me` with the kind in `check` and `status`, renewed with the kind's
/// refresh (expiry recorded from `expires_in`), validated, delivered, then checked with the
/// recorded expiry; then invalidated, and finally a token that expired: both say a person
/// must log in again, and no output carries a token.
pub(crate) async fn a_kind_lives_through_renewal(kind: &str, spec: TokenSpec, login_hint: &str) {
    use crate::util::tw;
    let sb = sandbox().await;
    let old = sb.issue_token(spec.clone().issued_ago(30 * 86_400));
    let ws = kind_workspace(&sb, kind, &old);

    // Inspect and probe: OK, the kind carried, the expiry not yet known.
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 0, "{c:?}");
    let lines: Value = serde_json::from_str(&c.stdout).unwrap();
    assert_eq!(lines[0]["kind"], kind, "{lines}");
    assert_eq!(lines[0]["state"], "ok", "{lines}");
    let text = tw(&ws.config, &["check"], &[], None).await;
    assert!(
        text.stdout.contains(&format!("shop-ig [{kind}]")),
        "{text:?}"
    );

    // Renew, validate, deliver: the new token is current, in the env file, its expiry known.
    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let new = current_of(&ws).await;
    assert_ne!(new, old);
    assert_eq!(sb.stats().refreshed, 1);
    let env = std::fs::read_to_string(&ws.env_file).unwrap();
    assert!(
        env.contains(&format!("IG_TOKEN={new}")) && env.contains("OTHER=kept"),
        "delivered"
    );
    assert_eq!(sb.stats().revoked, 0, "Meta offers no revoke for this kind");
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    let lines: Value = serde_json::from_str(&c.stdout).unwrap();
    let left = lines[0]["seconds_left"]
        .as_i64()
        .expect("the expiry Meta gave is recorded");
    assert!(
        (59 * 86_400..=60 * 86_400 + 3600).contains(&left),
        "{lines}"
    );
    assert_eq!(
        lines[0]["fingerprint"],
        tokenwarden::secret::Secret::new(new.clone())
            .fingerprint()
            .to_string()
    );
    // A second rotation at once is not due: the token is young and far from its expiry.
    let again = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(current_of(&ws).await, new, "{again:?}");

    // Invalidated (password change): dead, and the renewal says to log in again.
    sb.invalidate(&new, 460);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains(login_hint), "{r:?}");
    assert_eq!(
        sb.stats().refreshed,
        1,
        "a dead token is never sent to refresh"
    );
    for out in [&c.all(), &r.all()] {
        crate::util::assert_no_leak(out, &[&old, &new], "command output");
    }
}

#[tokio::test]
async fn an_instagram_token_is_probed_renewed_validated_and_delivered() {
    a_kind_lives_through_renewal("instagram", TokenSpec::instagram(), "log in again").await;
}

#[tokio::test]
async fn an_expired_instagram_token_is_not_refreshed_and_needs_a_new_login() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::instagram().issued_ago(30 * 86_400));
    let ws = kind_workspace(&sb, "instagram", &old);
    sb.advance_clock(31 * 86_400);
    let c = crate::util::tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    let r = crate::util::tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("log in again"), "{r:?}");
    assert_eq!(sb.stats().refreshed, 0);
    assert_eq!(current_of(&ws).await, old);
}

#[tokio::test]
async fn a_token_given_to_the_wrong_host_is_named_as_such() {
    let sb = sandbox().await;
    // An Instagram token configured as a WhatsApp one: Graph cannot parse it.
    let ig = sb.issue_token(TokenSpec::instagram());
    let ws = kind_workspace(&sb, "whatsapp", &ig);
    let c = crate::util::tw(&ws.config, &["check"], &[], None).await;
    assert!(
        c.stdout.contains("wrong host") && c.stdout.contains("kind = \"instagram\""),
        "{c:?}"
    );
    // A Graph token configured as an Instagram one: the Instagram host cannot parse it.
    let wa = sb.issue_token(TokenSpec::system_user_60d());
    let ws = kind_workspace(&sb, "instagram", &wa);
    let c = crate::util::tw(&ws.config, &["check"], &[], None).await;
    assert!(
        c.stdout.contains("wrong host") && c.stdout.contains("graph.instagram.com"),
        "{c:?}"
    );
    assert!(c.stdout.contains("kind = \"whatsapp\""), "{c:?}");
    crate::util::assert_no_leak(&c.all(), &[&ig, &wa], "check output");
}

#[tokio::test]
async fn an_email_about_an_expiring_instagram_token_says_where_to_log_in_again() {
    use jiff::Timestamp;
    use tokenwarden::alert::{self, Context};
    use tokenwarden::config::Kind;
    use tokenwarden::policy::{Condition, Expires, Notice, Policy, TokenFacts, Verdict, assess};
    let now = Timestamp::from_second(1_790_000_000).unwrap();
    let facts = TokenFacts {
        fingerprint: tokenwarden::secret::Fingerprint::of("not-a-real-token"),
        app_id: None,
        application: None,
        token_type: Some("INSTAGRAM".into()),
        expires: Expires::At(Timestamp::from_second(now.as_second() + 3 * 86_400).unwrap()),
        data_access_expires_at: None,
        issued_at: None,
        scopes: Vec::new(),
        wabas: Vec::new(),
    };
    let policy = Policy::default();
    let verdict = Verdict::Healthy;
    let a = assess(&verdict, Some(&facts), None, &policy, now);
    let mail = |kind: Kind| {
        let ctx = Context {
            token: "shop-ig",
            kind,
            waba_id: None,
            phone_number_id: None,
            store: "file",
            store_hint: "`tokenwarden stage --token shop-ig`",
            facts: Some(&facts),
            verdict: &verdict,
            state: a.state,
            effective: a.effective,
            policy: &policy,
            next_check: Some(now),
            failing_since: None,
            rotation: "Refresh it.",
            rotation_due: None,
        };
        let notice = Notice {
            condition: Some(Condition::Critical),
            key: "k".into(),
            occurrence: 1,
        };
        alert::render(&ctx, &notice, now)
    };
    let ig = mail(Kind::Instagram);
    for part in [&ig.text, &ig.html] {
        assert!(
            part.contains("Instagram API with Instagram Login"),
            "{part}"
        );
        assert!(
            part.contains("https://www.instagram.com/oauth/authorize"),
            "{part}"
        );
        assert!(part.contains("log in again"), "{part}");
    }
    let wa = mail(Kind::Whatsapp);
    assert!(
        !wa.text.contains("Instagram"),
        "a WhatsApp email reads as before"
    );
}

#[tokio::test]
async fn doctor_checks_an_instagram_token_with_its_own_probe_expiry_and_renewal() {
    use crate::util::tw;
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::instagram().issued_ago(30 * 86_400));
    let ws = kind_workspace(&sb, "instagram", &old);
    let d = tw(&ws.config, &["doctor", "--json"], &[], None).await;
    let report: Value = serde_json::from_str(&d.stdout).unwrap_or_else(|_| panic!("{d:?}"));
    let checks = &report["tokens"][0]["checks"];
    let by_id = |id: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {id} in {checks}"))
    };
    assert_eq!(by_id("valid")["mark"], "pass", "{checks}");
    assert!(
        by_id("valid")["detail"]
            .as_str()
            .unwrap()
            .contains("graph.instagram.com")
    );
    assert_eq!(
        by_id("expiry")["mark"],
        "warn",
        "unknown before the first refresh: {checks}"
    );
    assert_eq!(by_id("renewal")["mark"], "pass", "{checks}");
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "waba" && c["id"] != "scopes"),
        "no WhatsApp checks: {checks}"
    );

    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let d = tw(&ws.config, &["doctor", "--json"], &[], None).await;
    let report: Value = serde_json::from_str(&d.stdout).unwrap();
    let expiry = report["tokens"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "expiry")
        .cloned()
        .unwrap();
    assert_eq!(expiry["mark"], "pass", "recorded from expires_in: {expiry}");

    // Expired: a failure whose fix is a new login.
    sb.advance_clock(61 * 86_400);
    let d = tw(&ws.config, &["doctor"], &[], None).await;
    assert_ne!(d.code, 0, "{d:?}");
    assert!(d.stdout.contains("log in again"), "{d:?}");
    crate::util::assert_no_leak(&d.all(), &[&old], "doctor output");
}

#[tokio::test]
async fn an_imported_token_too_young_to_refresh_is_asked_again_a_day_later_not_failed() {
    use crate::util::tw;
    let sb = sandbox().await;
    let young = sb.issue_token(TokenSpec::instagram().issued_ago(3600));
    let ws = kind_workspace(&sb, "instagram", &young);
    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert!(r.all().contains("24 hours"), "{r:?}");
    assert!(
        !r.all().contains("FAILED"),
        "a young token is not a failure: {r:?}"
    );
    assert_eq!(current_of(&ws).await, young);
    // The refusal is remembered: the next run does not ask Meta again before a day passed.
    use tokenwarden::sandbox::Endpoint;
    assert_eq!(sb.stats().requests_for(Endpoint::RefreshAccessToken), 1);
    let again = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert!(again.all().contains("asking again after"), "{again:?}");
    assert_eq!(sb.stats().requests_for(Endpoint::RefreshAccessToken), 1);
    assert_eq!(sb.stats().refreshed, 0);
    let record = std::fs::read_to_string(ws.dir.path().join("expiry/shop-ig.json")).unwrap();
    crate::util::assert_no_leak(
        &format!("{record}{}{}", r.all(), again.all()),
        &[&young],
        "record and output",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_kind_of_each_token() {
    use crate::util::{Running, free_port, parse_metrics, scrape_text};
    let sb = sandbox().await;
    let ig = sb.issue_token(TokenSpec::instagram().issued_ago(30 * 86_400));
    let port = free_port();
    let top =
        format!("[schedule]\ncron = \"0 0 0 1 1 *\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let ws = kind_workspace_with(&sb, "instagram", &ig, &top);
    let clock = tokenwarden::daemon::OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let scrape = scrape_text(port).await;
    let samples = parse_metrics(&scrape);
    let has = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .any(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
    };
    assert!(
        has(
            "tokenwarden_token_state",
            &[("token", "shop-ig"), ("kind", "instagram"), ("state", "ok")]
        ),
        "{scrape}"
    );
    assert!(has(
        "tokenwarden_token_check_errors",
        &[("token", "shop-ig"), ("kind", "instagram")]
    ));
    crate::util::assert_no_leak(&scrape, &[&ig], "metrics");
    // `status` carries the kind too, in text and JSON.
    let st = crate::util::tw(&ws.config, &["status"], &[], None).await;
    assert!(st.stdout.contains("OK shop-ig [instagram]"), "{st:?}");
    let st = crate::util::tw(&ws.config, &["status", "--json"], &[], None).await;
    let rows: Value = serde_json::from_str(&st.stdout).unwrap_or_else(|_| panic!("{st:?}"));
    assert_eq!(rows[0]["kind"], "instagram", "{rows}");
    d.stop().await;
}

/// Adds `app = { app_id, app_secret = { file } }` (the Instagram app's own credentials) to the
/// workspace's token, with `secret` in a private file.
fn with_instagram_app(ws: &KindWorkspace, app_id: &str, secret: &str) {
    let file = ws.dir.path().join("ig-app-secret");
    std::fs::write(&file, secret).unwrap();
    let text = std::fs::read_to_string(&ws.config).unwrap().replacen(
        "kind = \"instagram\"\n",
        &format!(
            "kind = \"instagram\"\napp = {{ app_id = \"{app_id}\", app_secret = {{ file = \"{}\" }} }}\n",
            file.display()
        ),
        1,
    );
    crate::util::write_private(&ws.config, &text);
}

#[tokio::test]
async fn a_short_lived_instagram_token_is_exchanged_with_the_instagram_apps_own_secret() {
    use crate::util::tw;
    use tokenwarden::sandbox::Lifetime;
    let sb = sandbox().await;
    let current = sb.issue_token(TokenSpec::instagram().issued_ago(50 * 86_400));
    let short = sb.issue_token(
        TokenSpec::instagram()
            .app(sandbox::OTHER_APP_ID)
            .lifetime(Lifetime::AfterSecs(3600)),
    );
    let ws = kind_workspace(&sb, "instagram", &current);

    // The Meta app's secret is not the Instagram app's: refused as such, nothing staged.
    with_instagram_app(&ws, sandbox::OTHER_APP_ID, sandbox::DEMO_APP_SECRET);
    let r = tw(
        &ws.config,
        &["stage", "--token", "shop-ig"],
        &[],
        Some(&short),
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.all().contains("own id and secret"), "{r:?}");
    assert_eq!(sb.stats().refreshed, 0);

    // The Instagram app's own secret: exchanged, the long-lived token staged, its expiry known.
    let ws = kind_workspace(&sb, "instagram", &current);
    with_instagram_app(&ws, sandbox::OTHER_APP_ID, sandbox::OTHER_APP_SECRET);
    let r = tw(
        &ws.config,
        &["stage", "--token", "shop-ig"],
        &[],
        Some(&short),
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("exchanged the short-lived token"),
        "{r:?}"
    );
    assert_eq!(sb.stats().refreshed, 1);
    let p = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(p.code, 0, "{p:?}");
    let long = current_of(&ws).await;
    assert!(
        long != short && long != current,
        "the exchanged token is current"
    );
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    let lines: Value = serde_json::from_str(&c.stdout).unwrap();
    let left = lines[0]["seconds_left"]
        .as_i64()
        .expect("the exchange's expires_in is recorded");
    assert!(
        (59 * 86_400..=60 * 86_400 + 3600).contains(&left),
        "{lines}"
    );

    // A long-lived token is not exchanged (Meta refuses): it is staged as it is.
    let other = sb.issue_token(
        TokenSpec::instagram()
            .app(sandbox::OTHER_APP_ID)
            .issued_ago(2 * 86_400),
    );
    let r = tw(
        &ws.config,
        &["stage", "--token", "shop-ig"],
        &[],
        Some(&other),
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("exchanged"), "{r:?}");
    for out in [r.all(), p.all(), c.all()] {
        crate::util::assert_no_leak(
            &out,
            &[&short, &long, &current, &other, sandbox::OTHER_APP_SECRET],
            "output",
        );
    }
}

#[tokio::test]
async fn a_check_of_mixed_kinds_batches_only_what_debug_token_inspects_and_keeps_the_order() {
    use tokenwarden::store::file::FileStore;
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("app-secret");
    std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).unwrap();
    let store = dir.path().join("tokens.json");
    let wa_dead = sb.issue_token(crate::util::prod_spec());
    sb.invalidate(&wa_dead, 460);
    let tokens = [
        ("a-ig", "instagram", sb.issue_token(TokenSpec::instagram())),
        ("b-wa", "whatsapp", sb.issue_token(crate::util::prod_spec())),
        ("c-th", "threads", sb.issue_token(TokenSpec::threads())),
        ("d-wa-dead", "whatsapp", wa_dead),
        (
            "e-ig-wrong",
            "instagram",
            sb.issue_token(crate::util::prod_spec()),
        ),
    ];
    let mut text = format!(
        "state_dir = \"{}\"\n[meta]\napp_id = \"{}\"\napp_secret = {{ file = \"{}\" }}\nbase_url = \"{}\"\nattempts = 1\ntimeout = \"5s\"\n",
        dir.path().display(),
        sandbox::DEMO_APP_ID,
        secret_file.display(),
        sb.base_url()
    );
    for (name, kind, value) in &tokens {
        let ids = if *kind == "whatsapp" {
            format!(
                "phone_number_id = \"{}\"\nwaba_id = \"{}\"\n",
                sandbox::DEMO_PHONE_NUMBER_ID,
                sandbox::DEMO_WABA_ID
            )
        } else {
            String::new()
        };
        text.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nkind = \"{kind}\"\n{ids}"
        ));
        FileStore::new(store.clone(), name.to_string())
            .import_current(
                &tokenwarden::secret::Secret::new(value.as_str()),
                jiff::Timestamp::now(),
            )
            .unwrap();
    }
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    let c = crate::util::tw(&config, &["check", "--json"], &[], None).await;
    let lines: Value = serde_json::from_str(&c.stdout).unwrap_or_else(|_| panic!("{c:?}"));
    let got: Vec<(String, String, String)> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["token"].as_str().unwrap().to_string(),
                l["kind"].as_str().unwrap().to_string(),
                l["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("a-ig", "instagram", "ok"),
        ("b-wa", "whatsapp", "ok"),
        ("c-th", "threads", "ok"),
        ("d-wa-dead", "whatsapp", "invalid"),
        ("e-ig-wrong", "instagram", "critical"),
    ];
    assert_eq!(
        got,
        want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())),
        "{c:?}"
    );
    assert!(c.stdout.contains("wrong host"), "{c:?}");
    use tokenwarden::sandbox::Endpoint;
    assert!(
        sb.stats().batch_calls >= 1,
        "the WhatsApp tokens went through a batch"
    );
    assert_eq!(
        sb.stats().requests_for(Endpoint::Me),
        3,
        "each Instagram and Threads token probed once"
    );
}

/// The account behind a token of `kind` gone (deleted or deactivated): Meta invalidates its
/// tokens (the subcode is not documented; the sandbox's 467, "invalid", stands for it). The
/// token is dead, never sent to refresh, and the rotation says a person must log in again.
pub(crate) async fn a_kind_whose_account_is_gone(kind: &str, spec: TokenSpec, login_hint: &str) {
    use crate::util::tw;
    let sb = sandbox().await;
    let old = sb.issue_token(spec.issued_ago(30 * 86_400));
    let ws = kind_workspace(&sb, kind, &old);
    sb.invalidate(&old, 467);
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    assert_eq!(line["state"], "invalid", "{line}");
    assert!(!c.stdout.contains("wrong host"), "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains(login_hint), "{r:?}");
    assert_eq!(
        sb.stats().refreshed,
        0,
        "a dead token is never sent to refresh"
    );
    assert_eq!(current_of(&ws).await, old);
    for out in [c.all(), r.all()] {
        crate::util::assert_no_leak(&out, &[&old], "output");
    }
}

#[tokio::test]
async fn an_instagram_token_whose_account_is_gone_is_dead_and_needs_a_new_login() {
    a_kind_whose_account_is_gone("instagram", TokenSpec::instagram(), "log in again").await;
}

/// `import` through the real binary with its stdin.
async fn import(ws: &KindWorkspace, value: &str, flags: &[&str]) -> crate::util::Run {
    let mut args: Vec<String> = [
        "--config",
        ws.config.to_str().unwrap(),
        "import",
        "--token",
        "shop-ig",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(flags.iter().map(|s| s.to_string()));
    let stdin = format!("{value}\n");
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::util::run_with_stdin(&args, &[], Some(&stdin))
    })
    .await
    .unwrap()
}

/// `import` of a token `debug_token` does not inspect: without an expiry it says plainly that
/// the expiry is unknown and how to give it; with `--expires-in` (or `--expires-at`) the expiry
/// is recorded as a refresh's `expires_in` is, so `check` counts down from it and the token
/// is refreshed at once when due; a bad or past expiry, or one for a kind `debug_token`
/// inspects, is refused and nothing is stored.
#[tokio::test]
async fn import_records_a_given_expiry_or_says_it_is_unknown() {
    use crate::util::tw;
    let sb = sandbox().await;
    let first = sb.issue_token(TokenSpec::instagram().issued_ago(40 * 86_400));
    let ws = kind_workspace(&sb, "instagram", &first);

    // No expiry given: stored, and said plainly to be unknown until the first refresh.
    let second = sb.issue_token(TokenSpec::instagram().issued_ago(40 * 86_400));
    let r = import(&ws, &second, &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains("expiry is unknown until tokenwarden first refreshes it")
            && r.stdout.contains("--expires-in"),
        "{r:?}"
    );
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    assert!(line["seconds_left"].is_null(), "{line}");

    // Given: recorded, `check` counts down from it.
    let third = sb.issue_token(TokenSpec::instagram().issued_ago(40 * 86_400));
    let r = import(&ws, &third, &["--expires-in", "20d"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("is recorded"), "{r:?}");
    assert_eq!(current_of(&ws).await, third);
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    let left = line["seconds_left"].as_i64().expect("the given expiry");
    assert!((20 * 86_400 - 120..=20 * 86_400).contains(&left), "{line}");
    // A token 40 days into its 60 is old enough: the refresh is not held back a day.
    let rot = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(rot.code, 0, "{rot:?}");
    assert_eq!(sb.stats().refreshed, 1, "{rot:?}");
    let renewed = current_of(&ws).await;

    // Refused: a past time, a duration that is not one, more than 60 days; nothing stored.
    let fourth = sb.issue_token(TokenSpec::instagram());
    for (flags, says) in [
        (
            ["--expires-at", "2020-01-01T00:00:00Z"],
            "already have expired",
        ),
        (["--expires-in", "soon"], "not a duration"),
        (["--expires-in", "400d"], "more than 60 days"),
    ] {
        let r = import(&ws, &fourth, &flags).await;
        assert_eq!(r.code, 1, "{flags:?}: {r:?}");
        assert!(
            r.stderr.contains(says) && r.stderr.contains("nothing was stored"),
            "{flags:?}: {r:?}"
        );
        assert_eq!(current_of(&ws).await, renewed, "{flags:?}");
    }

    // A kind debug_token inspects: its expiry is Meta's own, the flag is refused.
    let wa = sb.issue_token(TokenSpec::system_user_60d());
    let wws = kind_workspace(&sb, "whatsapp", &wa);
    let other = sb.issue_token(TokenSpec::system_user_60d());
    let r = import(&wws, &other, &["--expires-in", "20d"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("debug_token inspects") && r.stderr.contains("nothing was stored"),
        "{r:?}"
    );
    assert_eq!(current_of(&wws).await, wa);
    for out in [r.all(), c.all(), rot.all()] {
        crate::util::assert_no_leak(
            &out,
            &[&first, &second, &third, &fourth, &wa, &other],
            "output",
        );
    }
}

/// The Instagram app's own secret is a dependency of every token whose `app` names it: reset
/// at Meta (tokenwarden still holding the old one), the daemon's renewal of two tokens of that
/// app meets "Error validating client secret" on the exchange. On-call gets one CONFIG "own
/// credentials" alert naming the Instagram app (not the Meta app), however many tokens share
/// it and however often it is met; no token is called dead, none is replaced. Once the secret
/// is fixed, the renewals go through, and one RESOLVED for the app says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_instagram_app_secret_is_one_own_credentials_alert_per_app() {
    a_reset_app_secret_is_one_alert("instagram", TokenSpec::instagram()).await;
}

/// [`a_reset_instagram_app_secret_is_one_own_credentials_alert_per_app`] for `kind`, its
/// tokens issued from `spec` for the sandbox's other app (the product app).
pub(crate) async fn a_reset_app_secret_is_one_alert(kind: &str, spec: TokenSpec) {
    use crate::util::{Running, SinkOpts, SmtpSink, subjects};
    use tokenwarden::store::file::FileStore;
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    // Reset at Meta: the secret tokenwarden holds no longer works.
    assert!(sb.reset_secret_of(sandbox::OTHER_APP_ID, "0123456789abcdef0123456789abcdef"));
    let names = ["shop-ig", "blog-ig"];
    let ProductAppTokens {
        dir,
        config,
        app_secret: ig_secret,
        values,
    } = product_app_tokens(
        &sb,
        sink.port,
        kind,
        spec.issued_ago(30 * 86_400),
        &names,
        false,
    );
    let current = |name: &str| {
        use tokenwarden::store::SecretStore;
        let store = FileStore::new(dir.path().join("tokens.json"), name.into());
        async move { store.current().await.unwrap().expose().to_string() }
    };

    let clock = tokenwarden::daemon::OffsetClock::default();
    let d = Running::start(&config, &clock);
    for _ in 0..2 {
        d.check_now().await;
        d.evaluate().await;
    }
    let got = subjects(&sink);
    let own: Vec<&String> = got.iter().filter(|s| s.contains("CONFIG")).collect();
    assert_eq!(own.len(), 1, "one alert for the one app: {got:#?}");
    assert!(
        own[0].contains(sandbox::OTHER_APP_ID) && own[0].contains(&format!("{kind} app")),
        "{got:#?}"
    );
    assert!(!own[0].contains(sandbox::DEMO_APP_ID), "{got:#?}");
    for s in &got {
        assert!(
            !s.contains("INVALID") && !s.contains("EXPIRED") && !s.contains("FAILED"),
            "no token is called dead, no rotation failed for good: {got:#?}"
        );
    }
    for (name, v) in names.iter().zip(&values) {
        assert_eq!(&current(name).await, v, "{name} not replaced");
    }
    assert_eq!(sb.stats().refreshed, 0);
    let (_, body) = sink
        .messages()
        .into_iter()
        .find(|(_, raw)| raw.contains("CONFIG"))
        .unwrap();

    // The secret fixed: the next run renews both.
    std::fs::write(&ig_secret, "0123456789abcdef0123456789abcdef").unwrap();
    d.check_now().await;
    d.evaluate().await;
    d.stop().await;
    for (name, v) in names.iter().zip(&values) {
        assert_ne!(
            &current(name).await,
            v,
            "{name} renewed once the secret is right"
        );
    }
    // One recovery, for the app (not one per token).
    let got = subjects(&sink);
    let resolved: Vec<&String> = got.iter().filter(|s| s.contains("RESOLVED")).collect();
    assert_eq!(resolved.len(), 1, "{got:#?}");
    assert!(
        resolved[0].contains(&format!(
            "Meta accepts the {kind} app {}'s credentials again",
            sandbox::OTHER_APP_ID
        )),
        "{got:#?}"
    );
    let all: String = sink.messages().into_iter().map(|(_, raw)| raw).collect();
    crate::util::assert_no_leak(
        &format!("{all}{body}"),
        &[
            &values[0],
            &values[1],
            sandbox::OTHER_APP_SECRET,
            "0123456789abcdef0123456789abcdef",
        ],
        "emails",
    );
}

/// A workspace of tokens `names` of `kind`, issued from `spec` for the sandbox's other app
/// (the product app, its secret in the file `app_secret`, as tokenwarden holds it), in a file
/// store, with email to the sink on `smtp_port`. With `expiry_known`, each token's life is
/// recorded (issued a day ago, 59 days left, as `import --expires-in` does): nothing is due.
pub(crate) struct ProductAppTokens {
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
    pub app_secret: std::path::PathBuf,
    pub values: Vec<String>,
}

/// Makes a [`ProductAppTokens`].
pub(crate) fn product_app_tokens(
    sb: &Sandbox,
    smtp_port: u16,
    kind: &str,
    spec: TokenSpec,
    names: &[&str],
    expiry_known: bool,
) -> ProductAppTokens {
    use tokenwarden::store::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let meta_secret = dir.path().join("app-secret");
    std::fs::write(&meta_secret, sandbox::DEMO_APP_SECRET).unwrap();
    let app_secret = dir.path().join("product-app-secret");
    std::fs::write(&app_secret, sandbox::OTHER_APP_SECRET).unwrap();
    let mut text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{a}\"\napp_secret = {{ file = \"{s}\" }}\nbase_url = \"{b}\"\nretry_delay = \"10ms\"\n{sections}",
        d = dir.path().display(),
        a = sandbox::DEMO_APP_ID,
        s = meta_secret.display(),
        b = sb.base_url(),
        sections = crate::util::sections(smtp_port, ""),
    );
    let now = jiff::Timestamp::now();
    let mut values = Vec::new();
    for name in names {
        let v = sb.issue_token(spec.clone().app(sandbox::OTHER_APP_ID));
        let secret = tokenwarden::secret::Secret::new(v.clone());
        FileStore::new(dir.path().join("tokens.json"), (*name).into())
            .import_current(&secret, now)
            .unwrap();
        if expiry_known {
            tokenwarden::observe::ExpiryLog::new(dir.path())
                .record(
                    name,
                    tokenwarden::observe::RecordedExpiry {
                        fingerprint: secret.fingerprint(),
                        issued_at: now - jiff::SignedDuration::from_hours(24),
                        expires_at: Some(now + jiff::SignedDuration::from_hours(59 * 24)),
                    },
                )
                .unwrap();
        }
        text.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nkind = \"{kind}\"\nsource = \"refresh\"\napp = {{ app_id = \"{app}\", app_secret = {{ file = \"{f}\" }} }}\n",
            app = sandbox::OTHER_APP_ID,
            f = app_secret.display()
        ));
        values.push(v);
    }
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    ProductAppTokens {
        dir,
        config,
        app_secret,
        values,
    }
}

/// `stage --expires-in`: the expiry of a hand-made Instagram token recorded before the
/// candidate is checked, so once promoted `check` counts down from it; refused for a kind
/// `debug_token` inspects, nothing staged.
#[tokio::test]
async fn stage_records_a_given_expiry_for_the_candidate() {
    use crate::util::tw;
    let sb = sandbox().await;
    let current = sb.issue_token(TokenSpec::instagram().issued_ago(40 * 86_400));
    let ws = kind_workspace(&sb, "instagram", &current);
    let next = sb.issue_token(TokenSpec::instagram().issued_ago(86_400));
    let s = tw(
        &ws.config,
        &["stage", "--token", "shop-ig", "--expires-in", "59d"],
        &[],
        Some(&next),
    )
    .await;
    assert_eq!(s.code, 0, "{s:?}");
    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(current_of(&ws).await, next);
    assert_eq!(
        sb.stats().refreshed,
        0,
        "the staged token was promoted as it is"
    );
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    let left = line["seconds_left"].as_i64().expect("the given expiry");
    assert!((59 * 86_400 - 120..=59 * 86_400).contains(&left), "{line}");

    let wa = sb.issue_token(TokenSpec::system_user_60d());
    let wws = kind_workspace(&sb, "whatsapp", &wa);
    let other = sb.issue_token(TokenSpec::system_user_60d());
    let s2 = tw(
        &wws.config,
        &[
            "stage",
            "--token",
            "shop-ig",
            "--expires-at",
            "2099-01-01T00:00:00Z",
        ],
        &[],
        Some(&other),
    )
    .await;
    assert_eq!(s2.code, 1, "{s2:?}");
    assert!(
        s2.stderr.contains("debug_token inspects") && s2.stderr.contains("nothing was staged"),
        "{s2:?}"
    );
    for out in [s.all(), r.all(), c.all(), s2.all()] {
        crate::util::assert_no_leak(&out, &[&current, &next, &wa, &other], "output");
    }
}

/// A short-lived token imported as current (an hour, from a login just made) cannot be
/// refreshed; with `app` configured, its renewal exchanges it with the Instagram app's secret
/// for a long-lived one, whose expiry Meta states and `check` then shows.
#[tokio::test]
async fn a_short_lived_current_token_is_renewed_by_the_exchange() {
    use crate::util::tw;
    use tokenwarden::sandbox::Lifetime;
    let sb = sandbox().await;
    let short = sb.issue_token(
        TokenSpec::instagram()
            .app(sandbox::OTHER_APP_ID)
            .lifetime(Lifetime::AfterSecs(3600)),
    );
    let ws = kind_workspace(&sb, "instagram", &short);
    with_instagram_app(&ws, sandbox::OTHER_APP_ID, sandbox::OTHER_APP_SECRET);
    let r = tw(&ws.config, &["rotate", "--token", "shop-ig"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let long = current_of(&ws).await;
    assert_ne!(long, short);
    assert_eq!(sb.stats().refreshed, 1, "one exchange, no refresh: {r:?}");
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    let line = &serde_json::from_str::<Value>(&c.stdout).unwrap()[0];
    let left = line["seconds_left"]
        .as_i64()
        .expect("the exchange's expiry");
    assert!((59 * 86_400..=60 * 86_400 + 3600).contains(&left), "{line}");
    for out in [r.all(), c.all()] {
        crate::util::assert_no_leak(&out, &[&short, &long, sandbox::OTHER_APP_SECRET], "output");
    }
}
