//! Every kind of token through a season of the daemon: four months of checks every six hours
//! against the sandbox, with every token renewed as its kind allows. What on-call receives is
//! counted per token: each warning or renewal at most a handful of times, never an email at
//! every check.

use tokenwarden::sandbox::{self, TokenSpec};
use tokenwarden::secret::Secret;
use tokenwarden::store::file::FileStore;

use crate::util::{DAY, Running, SinkOpts, SmtpSink, sandbox, subjects};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_season_of_every_kind_sends_a_handful_of_emails_per_token() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str, value: &str| {
        let p = d.join(name);
        std::fs::write(&p, value).unwrap();
        p
    };
    let secret = file("app-secret", sandbox::DEMO_APP_SECRET);
    let user = file("page-user-token", &sb.issue_token(TokenSpec::user()));
    let partner = file(
        "partner-token",
        &sb.issue_token(TokenSpec::system_user_never()),
    );
    let store = d.join("tokens.json");
    let now = jiff::Timestamp::now();
    let put = |name: &str, value: String| {
        FileStore::new(store.clone(), name.into())
            .import_current(&Secret::new(value), now)
            .unwrap();
    };
    put("customer", sb.issue_business_token());
    put("wa", sb.issue_token(crate::util::prod_spec()));
    put(
        "ig",
        sb.issue_token(TokenSpec::instagram().issued_ago(30 * DAY)),
    );
    put(
        "th",
        sb.issue_token(TokenSpec::threads().issued_ago(30 * DAY)),
    );
    put(
        "page",
        sb.issue_token(TokenSpec::page().issued_ago(50 * DAY)),
    );
    put(
        "ads",
        sb.issue_token(TokenSpec::marketing().issued_ago(45 * DAY)),
    );
    let text = format!(
        "state_dir = \"{d}\"\n[meta]\napp_id = \"{app}\"\napp_secret = {{ file = \"{secret}\" }}\nbase_url = \"{base}\"\nattempts = 1\ntimeout = \"5s\"\n\
         [schedule]\ncron = \"0 0 0 1 1 *\"\n\
         [email]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"tokenwarden <tw@example.com>\"\nto = [\"oncall@example.com\"]\ntimeout = \"5s\"\n\n\
         [[token]]\nname = \"wa\"\nsource = \"refresh\"\nwaba_id = \"{waba}\"\nphone_number_id = \"{phone}\"\n\n\
         [[token]]\nname = \"ig\"\nkind = \"instagram\"\nsource = \"refresh\"\n\n\
         [[token]]\nname = \"th\"\nkind = \"threads\"\nsource = \"refresh\"\n\n\
         [[token]]\nname = \"page\"\nkind = \"page\"\nsource = \"refresh\"\n\
         page = {{ id = \"{page}\", messenger = true, user_token = {{ file = \"{user}\" }} }}\n\n\
         [[token]]\nname = \"ads\"\nkind = \"marketing\"\nad_accounts = [\"act_{ads}\"]\nsource = \"refresh\"\nrevoke_after = \"0s\"\n\n\
         [[token]]\nname = \"customer\"\nkind = \"whatsapp_business\"\nwaba_id = \"{waba}\"\nsource = \"refresh\"\n\
         business = {{ client_business_id = \"{biz}\", partner_token = {{ file = \"{partner}\" }} }}\n",
        d = d.display(),
        app = sandbox::DEMO_APP_ID,
        secret = secret.display(),
        base = sb.base_url(),
        port = sink.port,
        waba = sandbox::DEMO_WABA_ID,
        phone = sandbox::DEMO_PHONE_NUMBER_ID,
        page = sandbox::DEMO_PAGE_ID,
        user = user.display(),
        ads = sandbox::DEMO_AD_ACCOUNT_ID,
        biz = sandbox::DEMO_CLIENT_BUSINESS_ID,
        partner = partner.display(),
    );
    let config = d.join("tokenwarden.toml");
    crate::util::write_private(&config, &text);
    let clock = tokenwarden::daemon::OffsetClock::default();
    let daemon = Running::start(&config, &clock);
    for _ in 0..(120 * 4) {
        daemon.check_now().await;
        daemon.evaluate().await;
        sb.advance_clock(6 * 3600);
        clock.advance(6 * 3600);
    }
    daemon.stop().await;
    let got = subjects(&sink);
    let of = |token: &str| -> Vec<&String> {
        got.iter()
            .filter(|s| s.contains(&format!(" {token}: ")))
            .collect()
    };
    // Kept alive the whole season by their own renewals, with nothing else to say.
    for token in ["wa", "ig", "th", "ads"] {
        let mails = of(token);
        assert!(mails.len() >= 2, "{token} renewed: {got:#?}");
        assert!(
            mails
                .iter()
                .all(|s| s.contains(&format!("ROTATED {token}:"))),
            "{token}: {mails:#?}"
        );
    }
    // A business token never expires and only a person replaces a working one: not a word.
    assert!(of("customer").is_empty(), "{got:#?}");
    // The Page token is taken again while the person's user token lives; once that is dead,
    // the failure is told once (again after the 30 days a sent email is remembered), the data
    // access deadline warns at each threshold, and only the deadline itself repeats daily.
    let page = of("page");
    let failed = page
        .iter()
        .filter(|s| s.contains("ROTATION FAILED"))
        .count();
    assert!((1..=2).contains(&failed), "{page:#?}");
    for left in ["13 days", "6 days", "2 days"] {
        let n = page
            .iter()
            .filter(|s| s.contains(&format!("loses data access in {left}")))
            .count();
        assert_eq!(n, 1, "{left}: {page:#?}");
    }
    assert!(page.len() <= 30, "{} emails: {page:#?}", page.len());
}
