//! Meta's rate limits and throttles during the daemon's check: the check ends at once, the token
//! is never called dead, nobody is emailed, and it is checked again when access returns.

use tokenwarden::daemon::OffsetClock;
use tokenwarden::sandbox::{Endpoint, Fault};

use crate::util::{
    Running, SinkOpts, SmtpSink, TokenEntry, Workspace, free_port, prod_spec, sample, sandbox,
    scrape, sections, state_dir, subjects,
};

/// Issue #7: Meta rate-limits a check and asks to wait a minute. The daemon does not sit the
/// wait out (that would hold every other token's check and its emails): the check ends at once
/// as "cannot check" with Meta's wait in the verdict, the token is not called dead, one
/// occurrence emails nobody, the other token is checked in the same run, and the next check
/// succeeds once the limit is lifted.
#[tokio::test]
async fn a_long_rate_limit_ends_the_check_at_once_never_alerts_and_the_next_check_succeeds() {
    use std::time::{Duration, Instant};
    use tokenwarden::policy::{State, Verdict};

    const RETRY_AFTER: u64 = 60;
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let spec = prod_spec;
    let prod = sb.issue_token(spec());
    let other = sb.issue_token(spec());
    // Retries allowed, so the test shows the wait is not sat out even when a retry would be.
    let meta =
        sections(sink.port, "").replace("attempts = 1\n", "attempts = 3\nretry_delay = \"10ms\"\n");
    assert!(meta.contains("attempts = 3"));
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("prod", &prod),
            TokenEntry::new("other", &other),
        ],
        &meta,
    );
    let state = tokenwarden::state::StateStore::new(&state_dir(&ws.config));
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let mut figures = Vec::new();
    // An app-level limit on the inspecting call, then WhatsApp's throughput limit on the
    // phone-number read; each hits `prod`, checked first, once.
    for (endpoint, code) in [(Endpoint::DebugToken, 4), (Endpoint::Phone, 130429)] {
        sb.add_fault(Fault::RateLimit {
            endpoint,
            count: 1,
            code,
            retry_after_secs: RETRY_AFTER,
            // Seconds as a gateway would add them; Meta itself sends only minutes.
            retry_after_header: true,
        });
        let requests = sb.stats().requests_for(endpoint);
        let started = Instant::now();
        d.check_now().await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(RETRY_AFTER / 4),
            "{endpoint:?}: the check of both tokens took {took:?}, Retry-After {RETRY_AFTER}s"
        );
        assert_eq!(
            sb.stats().requests_for(endpoint) - requests,
            2,
            "{endpoint:?}: the limited call is not sent again within the run"
        );
        let snap = state.load().unwrap();
        let p = &snap.tokens["prod"];
        // Throttled (issue 13, point 7): deferred by Meta's wait, never a verdict on the token.
        match &p.verdict {
            Some(Verdict::Throttled {
                detail,
                retry_after_secs,
            }) => assert!(
                detail.contains("rate limited") && *retry_after_secs == Some(RETRY_AFTER),
                "{detail} {retry_after_secs:?}"
            ),
            other => panic!("{endpoint:?}: {other:?}"),
        }
        assert!(
            !matches!(p.state, Some(State::Invalid | State::Expired)),
            "{:?}",
            p.state
        );
        assert_eq!(p.check_errors, 1);
        let o = &snap.tokens["other"];
        assert_eq!(
            o.verdict,
            Some(Verdict::Healthy),
            "the other token is checked"
        );
        assert_eq!(o.last_check, p.last_check);
        d.evaluate().await;
        assert!(sink.messages().is_empty(), "{:#?}", subjects(&sink));

        // The limit is lifted (the fault was for one request); the next check succeeds.
        sb.advance_clock(900);
        clock.advance(900);
        d.check_now().await;
        let snap = state.load().unwrap();
        let p = &snap.tokens["prod"];
        assert_eq!(p.verdict, Some(Verdict::Healthy));
        assert_eq!(p.check_errors, 0);
        assert!(sink.messages().is_empty(), "{:#?}", subjects(&sink));
        figures.push(format!("{endpoint:?} code {code}: {} ms", took.as_millis()));
    }
    println!(
        "rate limited with Retry-After {RETRY_AFTER}s: a check of two tokens returned in {}; no email; next check healthy",
        figures.join(", ")
    );
    d.stop().await;
}

/// Issue 13, point 7: Meta's business-use-case throttle (code 80008, access back in 30
/// minutes by `estimated_time_to_regain_access`, no Retry-After). The daemon defers the
/// token's check until then: no call in between however often it is asked, no alert, never
/// "invalid"; `status` and `/metrics`' state show the throttle; at the time Meta gave, the
/// deferred check runs by itself and the token is healthy.
#[tokio::test]
async fn a_throttled_token_is_checked_again_when_access_returns_not_before() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(prod_spec());
    sb.throttle_business(30);
    let port = free_port();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("billbytekot-prod", &token)],
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            sections(sink.port, "")
        ),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    d.check_now().await;
    assert_eq!(
        sb.stats().requests_for(Endpoint::Phone),
        1,
        "asked once, then deferred"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir(&ws.config).join("state.json")).unwrap())
            .unwrap();
    let ts = &state["tokens"]["billbytekot-prod"];
    assert_eq!(ts["verdict"]["verdict"], "throttled", "{ts}");
    let until = ts["throttled_until"].as_str().expect("deferred until");
    let until: jiff::Timestamp = until.parse().unwrap();
    let wait = until.as_second() - tokenwarden::daemon::Clock::now(&clock).as_second();
    assert!((25 * 60..=30 * 60).contains(&wait), "{wait}");
    let samples = scrape(port).await;
    assert_eq!(
        sample(
            &samples,
            "tokenwarden_token_throttled_until_timestamp_seconds"
        ),
        Some(until.as_second() as f64),
        "{samples:?}"
    );
    let status = ws.run(&["status"]);
    assert!(status.stdout.contains("throttled"), "{status:?}");
    assert!(!status.stdout.contains("INVALID"), "{status:?}");

    // Just before access returns: still nothing sent.
    sb.advance_clock(25 * 60);
    clock.advance(25 * 60);
    d.evaluate().await;
    assert_eq!(sb.stats().requests_for(Endpoint::Phone), 1);
    // When it returns, the deferred check runs on its own.
    sb.advance_clock(6 * 60);
    clock.advance(6 * 60);
    d.evaluate().await;
    assert_eq!(sb.stats().requests_for(Endpoint::Phone), 2);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir(&ws.config).join("state.json")).unwrap())
            .unwrap();
    let ts = &state["tokens"]["billbytekot-prod"];
    assert_eq!(ts["verdict"]["verdict"], "healthy", "{ts}");
    assert!(ts.get("throttled_until").is_none(), "{ts}");
    assert_eq!(
        sample(
            &scrape(port).await,
            "tokenwarden_token_throttled_until_timestamp_seconds"
        ),
        Some(0.0)
    );
    d.stop().await;
    assert!(subjects(&sink).is_empty(), "{:?}", subjects(&sink));
}
