//! Checking many tokens at once: `GraphClient::debug_tokens` against the sandbox's batches.

use std::time::Duration;

use tokenwarden::graph::{GraphClient, GraphError, Throttle, TokenInfo, Transient};
use tokenwarden::sandbox::{
    self, Endpoint, Fault, Sandbox, Scenario, TokenKind, TokenSpec, UsageModel,
};
use tokenwarden::secret::Secret;

use crate::util::{assert_no_leak, graph_client, sandbox, sandbox_with};

fn client_for(base: &str, secret: &str, attempts: u32) -> GraphClient {
    graph_client(base, secret, attempts, Duration::from_secs(10), None)
}

fn client(sb: &Sandbox, attempts: u32) -> GraphClient {
    client_for(&sb.base_url(), sandbox::DEMO_APP_SECRET, attempts)
}

fn valid_tokens(sb: &Sandbox, n: usize) -> Vec<Secret> {
    (0..n)
        .map(|_| Secret::new(sb.issue_token(TokenSpec::system_user_60d())))
        .collect()
}

/// What must agree between a batched and a single answer. Wording and the `expires_at` of an
/// invalidated token vary between calls (the sandbox varies them as Meta does), so they are
/// left out.
fn essence(r: &Result<TokenInfo, GraphError>) -> String {
    match r {
        Ok(i) => {
            let expiry = if i.valid() {
                format!("{:?}", i.expires_at)
            } else {
                "-".into()
            };
            format!(
                "ok valid={} app={:?} type={:?} user={:?} scopes={:?} wabas={:?} error={:?} expires={expiry}",
                i.valid(),
                i.app_id,
                i.token_type,
                i.user_id,
                i.scopes,
                i.waba_ids(),
                i.error.as_ref().map(|e| (e.code, e.subcode)),
            )
        }
        Err(e) => {
            let (kind, api) = match e {
                GraphError::TokenDead(a) => ("dead", Some(a)),
                GraphError::Misconfigured(a) => ("config", Some(a)),
                GraphError::OwnCredentials(a) => ("own", Some(a)),
                GraphError::Transient(_) => ("transient", None),
            };
            format!("err {kind} {:?}", api.map(|a| (a.code, a.subcode)))
        }
    }
}

#[tokio::test]
async fn batched_answers_come_in_order_and_match_one_by_one() {
    let sb = sandbox().await;
    let c = client(&sb, 2);
    let mut tokens = Vec::new();
    for i in 0..120 {
        let t = match i % 8 {
            0 | 1 => sb.issue_token(TokenSpec::system_user_60d()),
            2 => sb.issue_token(TokenSpec::user().expiring_in(-3600)),
            3 => {
                let t = sb.issue_token(TokenSpec::system_user_never());
                sb.invalidate(&t, 466);
                t
            }
            4 => {
                let t = sb.issue_token(TokenSpec::temporary_24h());
                sb.invalidate(&t, 460);
                t
            }
            5 => sb.issue_token(TokenSpec::system_user_60d().app(sandbox::OTHER_APP_ID)),
            6 => format!("EAAgarbage{i}"),
            _ => match i % 3 {
                0 => format!("not a token {i} & more=yes"),
                1 => sb.issue_token(TokenSpec::default().kind(TokenKind::App)),
                _ => format!("{}|wrong-secret", sandbox::DEMO_APP_ID),
            },
        };
        tokens.push(Secret::new(t));
    }

    let batched = c.debug_tokens(&tokens, 4).await;
    assert_eq!(batched.len(), tokens.len());
    assert_eq!(
        sb.stats().requests_for(Endpoint::Batch),
        3,
        "ceil(120 / 50) requests"
    );
    assert_eq!(sb.stats().requests_for(Endpoint::DebugToken), 120);

    let mut kinds = std::collections::BTreeSet::new();
    for (i, (t, got)) in tokens.iter().zip(&batched).enumerate() {
        let single = c.debug_token(t).await;
        assert_eq!(essence(got), essence(&single), "token {i}");
        kinds.insert(essence(got).split(" app=").next().unwrap().to_string());
    }
    // Every shape was there: valid, invalid, and another app's token refused as our own problem.
    assert!(kinds.contains("ok valid=true"), "{kinds:?}");
    assert!(kinds.contains("ok valid=false"), "{kinds:?}");
    assert!(kinds.contains("err own Some((100, None))"), "{kinds:?}");
    // In order: the position of each answer is its token's.
    for (i, r) in batched.iter().enumerate() {
        match i % 8 {
            0 | 1 => assert!(r.as_ref().unwrap().valid(), "token {i}"),
            2 => {
                let e = r.as_ref().unwrap().error.clone().unwrap();
                assert_eq!((e.code, e.subcode), (190, Some(463)), "token {i}");
            }
            3 => {
                let e = r.as_ref().unwrap().error.clone().unwrap();
                assert_eq!((e.code, e.subcode), (190, Some(466)), "token {i}");
            }
            4 => {
                let e = r.as_ref().unwrap().error.clone().unwrap();
                assert_eq!((e.code, e.subcode), (190, Some(460)), "token {i}");
            }
            5 => assert!(matches!(r, Err(GraphError::OwnCredentials(_))), "token {i}"),
            6 => assert!(!r.as_ref().unwrap().valid(), "token {i}"),
            _ => {}
        }
    }
    assert!(c.debug_tokens(&[], 4).await.is_empty());
}

#[tokio::test]
async fn rate_limited_items_are_retried_without_touching_the_others() {
    let sb = sandbox().await;
    let c = client(&sb, 3);
    let tokens = valid_tokens(&sb, 120);
    // Seven items of the first batch Meta reads are refused: three with code 4, four with 613.
    for (code, count) in [(4, 3), (613, 4)] {
        sb.add_fault(Fault::RateLimit {
            endpoint: Endpoint::DebugToken,
            count,
            code,
            retry_after_secs: 0,
            // Seconds as a gateway would add them; Meta itself sends only minutes.
            retry_after_header: true,
        });
    }
    let results = c.debug_tokens(&tokens, 4).await;
    for (i, r) in results.iter().enumerate() {
        assert!(
            r.as_ref().is_ok_and(|info| info.valid()),
            "token {i}: {r:?}"
        );
    }
    let stats = sb.stats();
    assert_eq!(
        stats.requests_for(Endpoint::Batch),
        3 + 1,
        "three batches, then one more with the seven refused items"
    );
    assert_eq!(stats.requests_for(Endpoint::DebugToken), 120 + 7);
}

#[tokio::test]
async fn items_still_limited_after_every_attempt_end_transient_alone() {
    let sb = sandbox().await;
    let c = client(&sb, 2);
    let tokens = valid_tokens(&sb, 10);
    // The first batch is refused entirely, the second (the retry) for its first five items.
    sb.add_fault(Fault::RateLimit {
        endpoint: Endpoint::DebugToken,
        count: 15,
        code: 80004,
        retry_after_secs: 0,
        // Seconds as a gateway would add them; Meta itself sends only minutes.
        retry_after_header: true,
    });
    let results = c.debug_tokens(&tokens, 1).await;
    for (i, r) in results.iter().enumerate() {
        if i < 5 {
            assert!(
                matches!(
                    r,
                    Err(GraphError::Transient(Transient::RateLimited { api, .. })) if api.code == 80004
                ),
                "token {i}: {r:?}"
            );
        } else {
            assert!(
                r.as_ref().is_ok_and(|info| info.valid()),
                "token {i}: {r:?}"
            );
        }
    }
    assert_eq!(sb.stats().requests_for(Endpoint::Batch), 2);
}

#[tokio::test]
async fn a_failed_batch_is_sent_again_whole_by_the_retry_policy() {
    let sb = sandbox().await;
    let tokens = valid_tokens(&sb, 60);
    for fault in [
        Fault::server_error(Endpoint::Batch, 503, 2),
        Fault::html(Endpoint::Batch),
        Fault::truncated(Endpoint::Batch),
        Fault::empty(Endpoint::Batch),
    ] {
        let before = sb.stats().requests_for(Endpoint::Batch);
        sb.add_fault(fault.clone());
        let results = client(&sb, 2).debug_tokens(&tokens, 1).await;
        assert!(
            results.iter().all(|r| r.as_ref().is_ok_and(|i| i.valid())),
            "{fault:?}"
        );
        assert_eq!(
            sb.stats().requests_for(Endpoint::Batch) - before,
            2 + 1,
            "{fault:?}: two batches, one of them twice"
        );
    }
    // With one attempt, the tokens of the failed batch get the failure, the others not.
    sb.add_fault(Fault::html(Endpoint::Batch));
    let results = client(&sb, 1).debug_tokens(&tokens, 1).await;
    assert!(
        results[..50]
            .iter()
            .all(|r| matches!(r, Err(GraphError::Transient(Transient::BadBody { .. }))))
    );
    assert!(results[50..].iter().all(|r| r.is_ok()));
}

#[tokio::test]
async fn usage_near_the_limit_brings_batches_in_flight_down_to_one() {
    // Without pressure: up to four batches at once, never more.
    let mut quiet = Scenario::demo();
    quiet.latency_ms = 100;
    let sb = sandbox_with(quiet).await;
    let tokens = valid_tokens(&sb, 600);
    let results = client(&sb, 1).debug_tokens(&tokens, 4).await;
    assert!(results.iter().all(|r| r.is_ok()));
    let log = sb.concurrency_log();
    assert_eq!(log.len(), 12);
    assert!(log.iter().all(|&n| n <= 4), "{log:?}");
    // Twelve batches of 100 ms sent four at a time overlap.
    assert!(sb.stats().peak_in_flight >= 2, "{log:?}");
    drop(sb);

    // A limit of 50 calls an hour: the first answer already reports more than 100 %.
    let mut busy = Scenario::demo();
    busy.latency_ms = 20;
    busy.usage = UsageModel {
        window_secs: 3600,
        call_limit: 50,
        enforce: false,
    };
    let sb = sandbox_with(busy).await;
    let tokens = valid_tokens(&sb, 600);
    let throttle = Throttle::new(4).with_max_pause(Duration::from_millis(30));
    let started = std::time::Instant::now();
    let results = client(&sb, 1).debug_tokens_with(&tokens, throttle).await;
    let took = started.elapsed();
    assert!(results.iter().all(|r| r.is_ok()));
    let log = sb.concurrency_log();
    assert_eq!(log.len(), 12);
    // The first four left before any answer; every later batch went alone.
    assert!(log[4..].iter().all(|&n| n == 1), "{log:?}");
    // And each of those waited the full pause after the one before it started.
    assert!(took >= Duration::from_millis(7 * 30), "{took:?}");
}

#[tokio::test]
async fn no_token_secret_or_url_in_any_error() {
    let sb = sandbox().await;
    let mut tokens = valid_tokens(&sb, 55);
    tokens.push(Secret::new(sb.issue_token(
        TokenSpec::system_user_60d().app(sandbox::OTHER_APP_ID),
    )));
    tokens.push(Secret::new("EAAgarbage-not-known"));
    let values: Vec<String> = tokens.iter().map(|t| t.expose().to_string()).collect();
    let mut secrets: Vec<&str> = values.iter().map(String::as_str).collect();
    secrets.push(sandbox::DEMO_APP_SECRET);
    // Meta's own wording may name `input_token`; a URL would carry `input_token=`.
    secrets.push("input_token=");
    let base = sb.base_url();
    secrets.push(&base);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("http://127.0.0.1:{port}");
    secrets.push(&closed);

    let mut errors = String::new();
    let mut collect = |results: Vec<Result<TokenInfo, GraphError>>| {
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            errors.push_str(&format!("{e}\n{e:?}\n"));
        }
    };
    for fault in [
        Fault::server_error(Endpoint::Batch, 500, 1),
        Fault::html(Endpoint::Batch),
        Fault::truncated(Endpoint::Batch),
        Fault::empty(Endpoint::Batch),
        Fault::rate_limit(Endpoint::Batch, 4),
        Fault::rate_limit(Endpoint::DebugToken, 17).times(3),
        Fault::server_error(Endpoint::DebugToken, 500, 2).times(2),
        Fault::truncated(Endpoint::DebugToken),
    ] {
        sb.add_fault(fault);
        collect(client(&sb, 1).debug_tokens(&tokens, 2).await);
        sb.clear_faults();
    }
    // Wrong app secret: every item is refused as tokenwarden's own credentials.
    let wrong = client_for(&sb.base_url(), "ffeeddccbbaa99887766554433221100", 1);
    let refused = wrong.debug_tokens(&tokens, 2).await;
    assert!(
        refused
            .iter()
            .all(|r| matches!(r, Err(GraphError::OwnCredentials(_))))
    );
    collect(refused);
    // Nobody listening.
    collect(
        client_for(&closed, sandbox::DEMO_APP_SECRET, 1)
            .debug_tokens(&tokens, 2)
            .await,
    );
    assert!(errors.lines().count() > 100, "{errors}");
    assert_no_leak(&errors, &secrets, "batched check errors");
}
