//! Which emails the daemon sends and when: each expiry threshold once and in order, then the
//! recovery; "cannot check" only for a failure that lasts; no recovery from a check that
//! learned nothing; one credentials alert for the app when Meta refuses tokenwarden's own app
//! secret, and the token's own for a token of another app. The daemon runs in this process (`util::Running`)
//! against the Graph sandbox and a real SMTP server on loopback.

use tokenwarden::daemon::OffsetClock;
use tokenwarden::sandbox::{self, Endpoint, Fault};

use crate::util::{
    DAY, Running, SinkOpts, SmtpSink, TokenEntry, Workspace, World, assert_no_leak, expiry_of,
    free_port, parse_metrics, prod_spec, sandbox, says, scrape_text, sections, state_dir, step_to,
    subjects, walk,
};

#[tokio::test]
async fn thresholds_are_emailed_in_order_each_once_then_recovery() {
    let World {
        sb,
        sink,
        token,
        ws,
    } = World::new("billbytekot-prod", prod_spec(), "").await;
    let expires = expiry_of(&sb);
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);

    let mut seen = 0;
    for (left, want) in [
        (15 * DAY, None),
        (
            7 * DAY,
            Some("[tokenwarden] WARNING billbytekot-prod: WhatsApp token expires in 7 days"),
        ),
        (7 * DAY - 3600, None),
        (
            3 * DAY,
            Some("[tokenwarden] WARNING billbytekot-prod: WhatsApp token expires in 3 days"),
        ),
        (
            DAY,
            Some("[tokenwarden] CRITICAL billbytekot-prod: WhatsApp token expires in 24 hours"),
        ),
        (DAY - 3600, None),
        (
            0,
            Some("[tokenwarden] EXPIRED billbytekot-prod: WhatsApp token expired"),
        ),
        (-3600, None),
    ] {
        step_to(&sb, &clock, expires, left);
        d.check_now().await;
        d.evaluate().await;
        let got = subjects(&sink);
        match want {
            Some(w) => {
                assert_eq!(got.len(), seen + 1, "at {left}s left: {got:#?}");
                assert!(says(&got[seen], w), "at {left}s left: {:?}", got[seen]);
                seen += 1;
            }
            None => assert_eq!(got.len(), seen, "nothing new at {left}s left: {got:#?}"),
        }
    }
    // Expired repeats after repeat_interval (24 h), not before.
    step_to(&sb, &clock, expires, -DAY - 60);
    d.check_now().await;
    assert_eq!(subjects(&sink).len(), seen + 1, "{:#?}", subjects(&sink));
    seen += 1;

    // A person puts a new token in place: one recovery email.
    let fresh = sb.issue_token(prod_spec());
    tokenwarden::store::file::FileStore::new(ws.store.clone(), "billbytekot-prod".into())
        .import_current(
            &tokenwarden::secret::Secret::new(fresh.clone()),
            jiff::Timestamp::now(),
        )
        .unwrap();
    d.check_now().await;
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), seen + 1, "{got:#?}");
    assert!(
        got[seen].starts_with("[tokenwarden] RESOLVED billbytekot-prod"),
        "{got:#?}"
    );

    // Every message: two recipients, threaded by token, multipart, no secret anywhere.
    let msgs = sink.messages();
    let thread: Vec<&str> = msgs
        .iter()
        .map(|(_, raw)| {
            raw.lines()
                .find(|l| l.starts_with("References:"))
                .unwrap_or("")
        })
        .collect();
    assert!(
        thread.iter().all(|t| !t.is_empty() && *t == thread[0]),
        "{thread:?}"
    );
    for (env, raw) in &msgs {
        assert_eq!(env["rcpt_tos"].as_array().unwrap().len(), 2);
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
        assert_no_leak(raw, &[&token, &fresh, sandbox::DEMO_APP_SECRET], "an email");
    }
    let mut on_disk = String::new();
    for f in walk(&state_dir(&ws.config)) {
        if f.file_name().unwrap() != "tokens.json" && f.file_name().unwrap() != "app-secret" {
            on_disk.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
        }
    }
    let audit = std::fs::read_to_string(state_dir(&ws.config).join("audit.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |e: &str| events.iter().filter(|v| v["event"] == e).count();
    assert!(count("check") >= 10, "{audit}");
    assert_eq!(count("email_queued"), seen + 1, "{audit}");
    assert_eq!(count("email_sent"), seen + 1, "{audit}");
    assert!(
        events
            .iter()
            .filter(|v| v["event"] == "check")
            .all(|v| v["fingerprint"].is_string()),
        "{audit}"
    );
    assert_no_leak(
        &on_disk,
        &[&token, &fresh, sandbox::DEMO_APP_SECRET],
        "state and outbox files",
    );
    d.stop().await;
}

#[tokio::test]
async fn a_single_failure_never_alerts_but_a_persistent_one_says_cannot_check() {
    let World {
        sb,
        sink,
        token: _,
        ws,
    } = World::new("prod", prod_spec(), "cannot_check_after = \"2h\"").await;
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    sb.add_fault(Fault::server_error(Endpoint::DebugToken, 503, 2));
    d.check_now().await;
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 6000));
    d.check_now().await;
    sb.add_fault(Fault::html(Endpoint::DebugToken));
    d.check_now().await;
    assert!(
        subjects(&sink).is_empty(),
        "transient failures alone never alert: {:#?}",
        subjects(&sink)
    );
    clock.advance(3 * 3600);
    sb.add_fault(Fault::html(Endpoint::DebugToken));
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("[tokenwarden] UNKNOWN prod: cannot check the WhatsApp token for"),
        "{got:#?}"
    );
    assert!(!got[0].contains("INVALID") && !got[0].contains("EXPIRED"));
    // Graph answers again: one recovery.
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[1].contains("RESOLVED"), "{got:#?}");
    d.stop().await;
}

/// An invalid token stays invalid through a check that learns nothing: Graph timing out (or
/// throttling, or the app refused) right after the INVALID alert must not send "RESOLVED".
/// (It did: a transient failure without a condition of its own ended every condition.)
#[tokio::test]
async fn an_invalid_token_is_not_resolved_by_a_check_that_times_out() {
    let World {
        sb,
        sink,
        token,
        ws,
    } = World::new("prod", prod_spec(), "cannot_check_after = \"2h\"").await;
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    sb.invalidate(&token, 460);
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("INVALID prod"), "{got:#?}");
    sb.add_fault(Fault::server_error(Endpoint::DebugToken, 503, 4));
    d.check_now().await;
    d.evaluate().await;
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 6000));
    d.check_now().await;
    d.evaluate().await;
    let got = subjects(&sink);
    assert_eq!(
        got.len(),
        1,
        "no RESOLVED for a token nobody could check: {got:#?}"
    );
    // Meta answers again: still invalid, and no second "first" alert either.
    d.check_now().await;
    assert_eq!(subjects(&sink).len(), 1, "{:#?}", subjects(&sink));
    d.stop().await;
}

/// Meta's app secret reset while tokenwarden holds the old one: every inspection is refused.
/// That is the app's trouble, not the tokens': one CONFIG alert naming the Meta app, however
/// many tokens meet it and however often they are checked; no token is called dead, rotated or
/// emailed on its own. Once Meta accepts the secret again: one recovery for the app, and none
/// per token (they never had an alert of their own).
#[tokio::test]
async fn a_reset_app_secret_is_one_alert_for_the_app_and_one_recovery() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let (a, b) = (sb.issue_token(prod_spec()), sb.issue_token(prod_spec()));
    let port = free_port();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &a), TokenEntry::new("staging", &b)],
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            sections(sink.port, "")
        ),
    );
    let refused_since = || async move {
        let text = scrape_text(port).await;
        parse_metrics(&text)
            .iter()
            .find(|s| {
                s["name"] == "tokenwarden_app_credentials_refused_since_timestamp_seconds"
                    && s["labels"]["app"] == sandbox::DEMO_APP_ID
            })
            .and_then(|s| s["value"].as_f64())
    };
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    assert!(subjects(&sink).is_empty());
    sb.reset_app_secret("0123456789abcdef0123456789abcdef");
    for _ in 0..3 {
        d.check_now().await;
        d.evaluate().await;
    }
    let got = subjects(&sink);
    assert_eq!(got.len(), 1, "one alert for the one app: {got:#?}");
    assert!(
        got[0].contains("CONFIG")
            && got[0].contains(&format!(
                "Meta refused the Meta app {}'s own credentials",
                sandbox::DEMO_APP_ID
            )),
        "{got:#?}"
    );
    let body = &sink.messages()[0].1;
    assert!(body.contains("App settings > Basic"), "{body}");
    assert!(
        body.contains("Invalid OAuth access token signature"),
        "{body}"
    );
    assert_no_leak(body, &[&a, &b, sandbox::DEMO_APP_SECRET], "the app alert");
    assert!(refused_since().await.is_some_and(|t| t > 1.7e9), "metric");
    // The tokens' own state: unknown, nothing new known, no alert of their own.
    let status = std::fs::read_to_string(ws.state_dir().join("state.json")).unwrap();
    assert!(status.contains("unknown"), "{status}");

    // The secret works again (here: Meta's side set back to the one tokenwarden holds).
    sb.reset_app_secret(sandbox::DEMO_APP_SECRET);
    for _ in 0..2 {
        d.check_now().await;
        d.evaluate().await;
    }
    let got = subjects(&sink);
    assert_eq!(got.len(), 2, "one recovery, for the app only: {got:#?}");
    assert!(
        got[1].contains("RESOLVED")
            && got[1].contains(&format!(
                "Meta accepts the Meta app {}'s credentials again",
                sandbox::DEMO_APP_ID
            )),
        "{got:#?}"
    );
    assert_eq!(refused_since().await, None, "no series once accepted");
    let stats = sb.stats();
    assert_eq!((stats.refreshed, stats.minted, stats.revoked), (0, 0, 0));
    d.stop().await;
}

/// A token of another app beside a healthy one: Meta refuses to inspect it, while
/// tokenwarden's app inspects the other token fine. That is this token's trouble: its own
/// CONFIG alert ("belongs to another app", what to do), and no alert about the app.
#[tokio::test]
async fn a_token_of_another_app_is_that_tokens_alert_not_the_apps() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let good = sb.issue_token(prod_spec());
    let other = sb.issue_token(prod_spec().app(sandbox::OTHER_APP_ID));
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("prod", &good),
            TokenEntry::new("stray", &other),
        ],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    for _ in 0..2 {
        d.check_now().await;
        d.evaluate().await;
    }
    let got = subjects(&sink);
    assert_eq!(
        got,
        vec!["[tokenwarden] CONFIG stray: the WhatsApp token belongs to another app".to_string()]
    );
    let body = &sink.messages()[0].1;
    assert!(body.contains("Access Token Debugger"), "{body}");
    assert_no_leak(
        body,
        &[&good, &other, sandbox::DEMO_APP_SECRET],
        "the token alert",
    );
    let stats = sb.stats();
    assert_eq!((stats.refreshed, stats.minted, stats.revoked), (0, 0, 0));
    d.stop().await;
}
