//! `kind = "whatsapp_business"`: a Tech Provider's business token of one customer, checked with
//! `debug_token` and a read of the customer's WABA's phone numbers, fetched again without the
//! customer through `system_user_access_tokens` (`fetch_only`) with the partner's own token; a
//! customer who removed the app is "disconnected by the customer", never rotated in a loop.

use tokenwarden::sandbox::{self, Sandbox, TokenSpec};

use crate::util::{sandbox, tw};

struct BizWorkspace {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

fn biz_workspace(sb: &Sandbox, value: &str, partner: &str) -> BizWorkspace {
    use tokenwarden::store::file::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("app-secret");
    std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).unwrap();
    let partner_file = dir.path().join("partner-token");
    std::fs::write(&partner_file, partner).unwrap();
    let text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{a}\"\napp_secret = {{ file = \"{s}\" }}\nbase_url = \"{b}\"\nattempts = 2\nretry_delay = \"10ms\"\ntimeout = \"5s\"\n\n[[token]]\nname = \"cust-shop\"\nkind = \"whatsapp_business\"\nwaba_id = \"{waba}\"\nsource = \"refresh\"\nbusiness = {{ client_business_id = \"{biz}\", partner_token = {{ file = \"{p}\" }} }}\n",
        d = dir.path().display(),
        a = sandbox::DEMO_APP_ID,
        s = secret_file.display(),
        b = sb.base_url(),
        waba = sandbox::DEMO_WABA_ID,
        biz = sandbox::DEMO_CLIENT_BUSINESS_ID,
        p = partner_file.display(),
    );
    FileStore::new(dir.path().join("tokens.json"), "cust-shop".into())
        .import_current(
            &tokenwarden::secret::Secret::new(value),
            jiff::Timestamp::now(),
        )
        .unwrap();
    let config = dir.path().join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    BizWorkspace { dir, config }
}

async fn current_of(ws: &BizWorkspace) -> String {
    use tokenwarden::store::SecretStore;
    tokenwarden::store::file::FileStore::new(ws.dir.path().join("tokens.json"), "cust-shop".into())
        .current()
        .await
        .unwrap()
        .expose()
        .to_string()
}

#[tokio::test]
async fn a_business_token_is_fetched_again_without_the_customer_and_a_disconnect_is_named() {
    let sb = sandbox().await;
    let partner = sb.issue_token(TokenSpec::system_user_never());
    let first = sb.issue_business_token();
    let ws = biz_workspace(&sb, &first, &partner);
    let c = tw(&ws.config, &["check", "--json"], &[], None).await;
    assert_eq!(c.code, 0, "{c:?}");
    assert!(
        c.stdout.contains("\"kind\": \"whatsapp_business\""),
        "{c:?}"
    );

    // Fetched again: Meta hands back the same token: extended in place, nothing revoked.
    let r = tw(&ws.config, &["rotate", "--token", "cust-shop"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(current_of(&ws).await, first);
    assert_eq!(sb.stats().revoked, 0);
    // Known now never to expire, it is still fetched again, never "traded for a 60-day
    // token": the plan refused it.
    let dry = tw(
        &ws.config,
        &["rotate", "--dry-run", "--token", "cust-shop"],
        &[],
        None,
    )
    .await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(!dry.stdout.contains("60-day"), "{dry:?}");

    // The business token killed and made anew at Meta: dead here, then fetched, validated and
    // promoted without the customer.
    sb.invalidate(&first, 460);
    let second = sb.issue_business_token();
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "cust-shop"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(current_of(&ws).await, second);

    // The customer removes the app: "disconnected by the customer", and fetching is refused.
    sb.disconnect_business(sandbox::DEMO_WABA_ID);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    assert!(c.stdout.contains("disconnected by the customer"), "{c:?}");
    let d = tw(&ws.config, &["doctor"], &[], None).await;
    assert!(d.stdout.contains("disconnected by the customer"), "{d:?}");
    let r = tw(&ws.config, &["rotate", "--token", "cust-shop"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.all().contains("customer may have removed the app"),
        "{r:?}"
    );
    assert_eq!(current_of(&ws).await, second);
    for out in [c.all(), r.all(), d.all()] {
        crate::util::assert_no_leak(&out, &[&first, &second, &partner], "output");
    }
}

/// The rest of a business token's failure modes: its renewal impossible because the partner's
/// own token is dead (a failure for a person, the customer's token untouched, never a loop),
/// and a token of another product given to Graph (the wrong host, named).
#[tokio::test]
async fn a_business_token_with_a_dead_partner_token_or_on_the_wrong_host_is_named() {
    let sb = sandbox().await;
    let partner = sb.issue_token(TokenSpec::system_user_never());
    let first = sb.issue_business_token();
    let ws = biz_workspace(&sb, &first, &partner);
    sb.invalidate(&first, 460);
    sb.invalidate(&partner, 460);
    let c = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(c.code, 2, "{c:?}");
    let r = tw(&ws.config, &["rotate", "--token", "cust-shop"], &[], None).await;
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("partner"), "{r:?}");
    assert_eq!(current_of(&ws).await, first);

    let ig = sb.issue_token(TokenSpec::instagram());
    let ws = biz_workspace(&sb, &ig, &partner);
    let w = tw(&ws.config, &["check"], &[], None).await;
    assert!(
        w.stdout.contains("wrong host") && w.stdout.contains("kind = \"instagram\""),
        "{w:?}"
    );
    for out in [c.all(), r.all(), w.all()] {
        crate::util::assert_no_leak(&out, &[&first, &partner, &ig], "output");
    }
}

/// A business token never expires, but a 60-day rotation period set on it makes it due:
/// Meta's `fetch_only` hands back the same token, so nothing can be replaced. The daemon says
/// so once (UNCHANGED, with what a person can do) and does not ask again at every check (it
/// did: an EXTENDED email at every check, each claiming the same token had been extended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_token_handed_back_unchanged_is_not_fetched_again_at_every_check() {
    use crate::util::{DAY, Running, SinkOpts, SmtpSink, subjects};
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let partner = sb.issue_token(TokenSpec::system_user_never());
    let first = sb.issue_business_token();
    let ws = biz_workspace(&sb, &first, &partner);
    let mut text = std::fs::read_to_string(&ws.config).unwrap();
    // The default alerts (the 60-day rotation period), email to the sink, no scheduled check.
    let daemon = format!(
        "[schedule]\ncron = \"0 0 0 1 1 *\"\n[email]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"tokenwarden <tw@example.com>\"\nto = [\"oncall@example.com\"]\ntimeout = \"5s\"\n",
        sink.port
    );
    text = text.replacen("\n[[token]]", &format!("{daemon}\n[[token]]"), 1);
    // A rotation period asked for on the token itself (a business token has none by default).
    text.push_str("max_age = \"60d\"\n");
    crate::util::write_private(&ws.config, &text);
    let clock = tokenwarden::daemon::OffsetClock::default();
    // 45 days on: past the rotation time of the 60-day period (a third before its end).
    sb.advance_clock(45 * DAY);
    clock.advance(45 * DAY);
    let d = Running::start(&ws.config, &clock);
    for _ in 0..4 {
        d.check_now().await;
        d.evaluate().await;
        clock.advance(3600);
        sb.advance_clock(3600);
    }
    d.stop().await;
    let got = subjects(&sink);
    assert_eq!(
        got,
        vec!["[tokenwarden] UNCHANGED cust-shop: Meta handed back the same token".to_string()],
        "said once, not at every check"
    );
    let body = &sink.messages()[0].1;
    assert!(body.contains("max_age"), "{body}");
    assert_eq!(current_of(&ws).await, first);
    assert_eq!(sb.stats().revoked, 0);
}
