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

/// `doctor` checks each product app once, however many tokens name it, through the real
/// binary: a Threads app's right secret is accepted by Threads' app access token, a wrong one
/// fails with the Threads app's own secret as the fix, an unreadable reference fails naming
/// the reference, and an Instagram app says plainly that Meta cannot check it alone. The exit
/// code follows the worst app; no secret reaches any output, traces included.
#[tokio::test]
async fn doctor_checks_each_product_apps_secret_once() {
    use tokenwarden::sandbox::Endpoint;
    use tokenwarden::store::file::FileStore;
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let meta_secret = dir.path().join("app-secret");
    std::fs::write(&meta_secret, sandbox::DEMO_APP_SECRET).unwrap();
    let th_secret = dir.path().join("threads-app-secret");
    std::fs::write(&th_secret, sandbox::OTHER_APP_SECRET).unwrap();
    // A secret pasted from the wrong place (or reset since): not the Threads app's.
    let wrong = "0123456789abcdef0123456789abcdef";
    let right_app = format!(
        "{{ app_id = \"{}\", app_secret = {{ file = \"{}\" }} }}",
        sandbox::OTHER_APP_ID,
        th_secret.display()
    );
    let env_app = |var: &str| {
        format!(
            "{{ app_id = \"{}\", app_secret = {{ env = \"{var}\" }} }}",
            sandbox::OTHER_APP_ID
        )
    };
    let tokens = [
        ("th-a", "threads", right_app.clone()),
        ("th-b", "threads", right_app.clone()),
        ("th-wrong", "threads", env_app("TW_TEST_THREADS_WRONG")),
        ("th-unset", "threads", env_app("TW_TEST_THREADS_UNSET")),
        ("ig", "instagram", right_app.clone()),
    ];
    let mut text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{a}\"\napp_secret = {{ file = \"{s}\" }}\nbase_url = \"{b}\"\nattempts = 2\nretry_delay = \"10ms\"\ntimeout = \"5s\"\n",
        d = dir.path().display(),
        a = sandbox::DEMO_APP_ID,
        s = meta_secret.display(),
        b = sb.base_url(),
    );
    let mut values = Vec::new();
    for (name, kind, app) in &tokens {
        let spec = if *kind == "threads" {
            TokenSpec::threads()
        } else {
            TokenSpec::instagram()
        };
        let v = sb.issue_token(spec.app(sandbox::OTHER_APP_ID).issued_ago(30 * 86_400));
        FileStore::new(dir.path().join("tokens.json"), (*name).into())
            .import_current(
                &tokenwarden::secret::Secret::new(v.clone()),
                jiff::Timestamp::now(),
            )
            .unwrap();
        text.push_str(&format!(
            "\n[[token]]\nname = \"{name}\"\nkind = \"{kind}\"\nsource = \"refresh\"\napp = {app}\n"
        ));
        values.push(v);
    }
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    let env = [
        ("TW_TEST_THREADS_WRONG", wrong),
        ("TOKENWARDEN_LOG", "tokenwarden=trace,debug"),
    ];

    let d = crate::util::tw(&config, &["doctor"], &env, None).await;
    assert_eq!(d.code, 1, "a refused secret fails doctor: {d:?}");
    let out = &d.stdout;
    let app_line = |used_by: &str| -> String {
        let header = format!("app {}  (used by {used_by})", sandbox::OTHER_APP_ID);
        let at = out
            .find(&header)
            .unwrap_or_else(|| panic!("no `{header}` in\n{out}"));
        out[at..]
            .lines()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
    };
    // One line for the two tokens sharing an app and a secret.
    assert_eq!(out.matches("(used by th-a, th-b)").count(), 1, "{out}");
    let ok = app_line("th-a, th-b");
    assert!(
        ok.contains("✓ app_secret")
            && ok.contains(&format!(
                "the Threads app {}'s secret is accepted",
                sandbox::OTHER_APP_ID
            )),
        "{ok}"
    );
    let refused = app_line("th-wrong");
    assert!(refused.contains("✗ app_secret"), "{refused}");
    assert!(
        refused.contains("App settings > Basic > Threads app secret")
            && refused.contains("environment variable `TW_TEST_THREADS_WRONG`")
            && refused.contains("the old one no longer works"),
        "{refused}"
    );
    let unset = app_line("th-unset");
    assert!(
        unset.contains("✗ app_secret")
            && unset.contains("cannot read")
            && unset.contains("`TW_TEST_THREADS_UNSET`"),
        "{unset}"
    );
    let ig = app_line("ig");
    assert!(
        ig.contains("- app_secret")
            && ig.contains("Meta offers no call that checks an Instagram app's secret alone")
            && ig.contains("next exchange of a short-lived token"),
        "{ig}"
    );
    assert!(
        out.contains("4 product app(s) checked: 1 accepted, 2 with problems, 1 not checkable"),
        "{out}"
    );
    assert_eq!(
        sb.stats().requests_for(Endpoint::ThreadsAppToken),
        2,
        "one call per readable Threads app secret, none for Instagram"
    );
    let mut secrets: Vec<&str> = vec![sandbox::OTHER_APP_SECRET, sandbox::DEMO_APP_SECRET, wrong];
    secrets.extend(values.iter().map(String::as_str));
    crate::util::assert_no_leak(&d.all(), &secrets, "doctor output");

    // The JSON report names each app once with its tokens.
    let j = crate::util::tw(&config, &["doctor", "--json"], &env, None).await;
    assert_eq!(j.code, 1, "{j:?}");
    let report: Value = serde_json::from_str(&j.stdout).unwrap_or_else(|_| panic!("{j:?}"));
    let apps = report["apps"].as_array().unwrap();
    let marks: Vec<(&str, &str, Vec<&str>)> = apps
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap(),
                a["check"]["mark"].as_str().unwrap(),
                a["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        vec![
            ("threads", "pass", vec!["th-a", "th-b"]),
            ("threads", "fail", vec!["th-wrong"]),
            ("threads", "fail", vec!["th-unset"]),
            ("instagram", "skip", vec!["ig"]),
        ]
    );
    crate::util::assert_no_leak(&j.all(), &secrets, "doctor --json output");

    // Only the right app: healthy.
    let one = crate::util::tw(&config, &["doctor", "--token", "th-a"], &env, None).await;
    assert_eq!(one.code, 0, "{one:?}");
    assert!(one.stdout.contains("(used by th-a)"), "{one:?}");
    assert!(!one.stdout.contains("th-wrong"), "{one:?}");
}

/// The daemon watches a Threads app's own secret while its tokens are fine: a secret reset at
/// Meta is told by the first check (one CONFIG alert for the app, no renewal needed to find
/// it, no token called dead), Threads' app access token is asked at most once an hour however
/// often the tokens are checked, and the first check after the secret is fixed (an hour on)
/// sends one RESOLVED for the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_watches_a_threads_apps_secret_hourly() {
    use crate::util::{Running, SinkOpts, SmtpSink, subjects};
    use tokenwarden::sandbox::Endpoint;
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let reset = "0123456789abcdef0123456789abcdef";
    assert!(sb.reset_secret_of(sandbox::OTHER_APP_ID, reset));
    let crate::kinds_instagram::ProductAppTokens {
        dir: _dir,
        config,
        app_secret: th_secret,
        values,
    } = crate::kinds_instagram::product_app_tokens(
        &sb,
        sink.port,
        "threads",
        TokenSpec::threads().issued_ago(86_400),
        &["th-a", "th-b"],
        true,
    );
    let asked = || sb.stats().requests_for(Endpoint::ThreadsAppToken);

    let clock = tokenwarden::daemon::OffsetClock::default();
    let d = Running::start(&config, &clock);
    for _ in 0..3 {
        d.check_now().await;
        d.evaluate().await;
    }
    let got = subjects(&sink);
    assert_eq!(
        got,
        vec![format!(
            "[tokenwarden] CONFIG: Meta refused the threads app {}'s own credentials",
            sandbox::OTHER_APP_ID
        )]
    );
    assert_eq!(asked(), 1, "once an hour, not once per check or token");
    assert_eq!(sb.stats().refreshed, 0, "nothing was due, nothing renewed");

    // Fixed: the next ask (an hour on) finds it accepted; one recovery, for the app.
    std::fs::write(&th_secret, reset).unwrap();
    d.check_now().await;
    assert_eq!((asked(), subjects(&sink).len()), (1, 1));
    clock.advance(3601);
    d.check_now().await;
    d.evaluate().await;
    d.check_now().await;
    d.stop().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(
        got[1],
        format!(
            "[tokenwarden] RESOLVED: Meta accepts the threads app {}'s credentials again",
            sandbox::OTHER_APP_ID
        )
    );
    assert_eq!(asked(), 2);
    let all: String = sink.messages().into_iter().map(|(_, raw)| raw).collect();
    crate::util::assert_no_leak(
        &all,
        &[&values[0], &values[1], sandbox::OTHER_APP_SECRET, reset],
        "emails",
    );
}
