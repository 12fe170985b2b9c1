//! The Graph client against the sandbox: every token shape and every fault, classified right.

use std::time::Duration;

use tokenwarden::graph::{Expiry, GraphClient, GraphError, Transient};
use tokenwarden::sandbox::{self, Endpoint, Fault, Sandbox, TokenKind, TokenSpec};
use tokenwarden::secret::Secret;

use crate::util::{DAY, assert_no_leak, graph_client, prod_spec, sandbox};

fn client_for(base: &str, secret: &str, attempts: u32, timeout: Duration) -> GraphClient {
    graph_client(base, secret, attempts, timeout, None)
}

fn client(sb: &Sandbox) -> GraphClient {
    client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        1,
        Duration::from_secs(5),
    )
}

#[tokio::test]
async fn valid_shapes_parse_into_token_info() {
    let sb = sandbox().await;
    let c = client(&sb);
    let t = Secret::new(sb.issue_token(prod_spec()));
    let info = c.debug_token(&t).await.unwrap();
    assert!(info.valid());
    assert_eq!(info.token_type.as_deref(), Some("SYSTEM_USER"));
    assert_eq!(info.app_id.as_deref(), Some(sandbox::DEMO_APP_ID));
    assert!(info.missing_whatsapp_scopes().is_empty());
    assert!(info.targets_waba(sandbox::DEMO_WABA_ID));
    let Expiry::At(exp) = info.expires_at else {
        panic!("{info:?}")
    };
    assert_eq!(
        exp.as_second() % 3600,
        0,
        "Meta's 60-day expiry lands on the hour"
    );

    let never =
        Secret::new(sb.issue_token(TokenSpec::system_user_never().wabas(&[sandbox::DEMO_WABA_ID])));
    assert_eq!(
        c.debug_token(&never).await.unwrap().expires_at,
        Expiry::Never
    );

    let user = Secret::new(sb.issue_token(TokenSpec::user()));
    let info = c.debug_token(&user).await.unwrap();
    assert_eq!(info.token_type.as_deref(), Some("USER"));
    assert!(info.data_access_expires_at.is_some());

    let phone = c
        .phone_number(&t, sandbox::DEMO_PHONE_NUMBER_ID)
        .await
        .unwrap();
    assert_eq!(
        phone.display_phone_number.as_deref(),
        Some("+1 555-010-4477")
    );
    let numbers = c
        .waba_phone_numbers(&t, sandbox::DEMO_WABA_ID)
        .await
        .unwrap();
    assert!(
        numbers
            .iter()
            .any(|p| p.id == sandbox::DEMO_PHONE_NUMBER_ID)
    );
}

#[tokio::test]
async fn dead_shapes_come_back_invalid_with_their_subcode() {
    let sb = sandbox().await;
    let c = client(&sb);
    let expired = Secret::new(sb.issue_token(prod_spec()));
    sb.advance_clock(61 * 86_400);
    let info = c.debug_token(&expired).await.unwrap();
    assert!(!info.valid());
    let e = info.error.unwrap();
    assert_eq!((e.code, e.subcode), (190, Some(463)));
    assert!(
        e.message.contains("PST") || e.message.contains("PDT"),
        "{}",
        e.message
    );

    for sub in [458, 460, 466, 467] {
        let t = Secret::new(sb.issue_token(prod_spec()));
        sb.invalidate(t.expose(), sub);
        let info = c.debug_token(&t).await.unwrap();
        assert!(!info.valid());
        assert_eq!(
            info.error.map(|e| (e.code, e.subcode)),
            Some((190, Some(sub as i64))),
            "subcode {sub}"
        );
        // Reads with a dead token are TokenDead, never anything else.
        assert!(matches!(
            c.phone_number(&t, sandbox::DEMO_PHONE_NUMBER_ID).await,
            Err(GraphError::TokenDead(_))
        ));
    }
    for garbage in [
        format!("EAAG{}", "Q".repeat(150)),
        "not-a-token-at-all".to_string(),
    ] {
        let info = c.debug_token(&Secret::new(garbage)).await.unwrap();
        assert!(
            !info.valid() && info.app_id.is_none() && info.scopes.is_empty(),
            "{info:?}"
        );
    }
}

#[tokio::test]
async fn own_credential_errors_are_never_a_dead_token() {
    let sb = sandbox().await;
    let t = Secret::new(sb.issue_token(prod_spec()));
    let wrong = client_for(
        &sb.base_url(),
        "ffffffffffffffffffffffffffffffff",
        1,
        Duration::from_secs(5),
    );
    assert!(matches!(
        wrong.debug_token(&t).await,
        Err(GraphError::OwnCredentials(_))
    ));

    let other_app = Secret::new(sb.issue_token(prod_spec().app(sandbox::OTHER_APP_ID)));
    assert!(matches!(
        client(&sb).debug_token(&other_app).await,
        Err(GraphError::OwnCredentials(_))
    ));

    sb.reset_app_secret("0123456789abcdef0123456789abcdef");
    let e = client(&sb).debug_token(&t).await.unwrap_err();
    assert!(matches!(e, GraphError::OwnCredentials(_)), "{e:?}");
}

#[tokio::test]
async fn misconfiguration_is_its_own_outcome() {
    let sb = sandbox().await;
    let c = client(&sb);
    let t = Secret::new(sb.issue_token(prod_spec()));
    match c.phone_number(&t, "15550104477").await {
        Err(GraphError::Misconfigured(api)) => assert_eq!((api.code, api.subcode), (100, Some(33))),
        other => panic!("{other:?}"),
    }
    match c.phone_number(&t, sandbox::OTHER_PHONE_NUMBER_ID).await {
        Err(GraphError::Misconfigured(api)) => assert_eq!(api.code, 200),
        other => panic!("{other:?}"),
    }
    let scopeless = Secret::new(
        sb.issue_token(
            TokenSpec::system_user_60d()
                .scopes(&["business_management"])
                .wabas(&[]),
        ),
    );
    assert!(matches!(
        c.phone_number(&scopeless, sandbox::DEMO_PHONE_NUMBER_ID)
            .await,
        Err(GraphError::Misconfigured(_))
    ));
    assert!(matches!(
        c.phone_number(&t, "").await,
        Err(GraphError::Misconfigured(_))
    ));
    match c
        .send_text(&t, sandbox::DEMO_PHONE_NUMBER_ID, "15559999999", "hi")
        .await
    {
        Err(GraphError::Misconfigured(api)) => assert_eq!(api.code, 131030),
        other => panic!("{other:?}"),
    }
    match c
        .send_template(
            &t,
            sandbox::DEMO_PHONE_NUMBER_ID,
            "15550001111",
            "nope",
            "en_US",
        )
        .await
    {
        Err(GraphError::Misconfigured(api)) => assert_eq!(api.code, 132001),
        other => panic!("{other:?}"),
    }
    assert!(
        c.send_template(
            &t,
            sandbox::DEMO_PHONE_NUMBER_ID,
            "15550001111",
            "hello_world",
            "en_US"
        )
        .await
        .unwrap()
        .starts_with("wamid.")
    );
}

/// Each fault, once, against a client that does not retry: the right transient kind.
#[tokio::test]
async fn every_fault_is_transient_and_named() {
    let sb = sandbox().await;
    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        1,
        Duration::from_millis(300),
    );
    let t = Secret::new(sb.issue_token(prod_spec()));
    let cases: Vec<(Fault, &str)> = vec![
        (Fault::server_error(Endpoint::DebugToken, 500, 1), "api"),
        (Fault::server_error(Endpoint::DebugToken, 503, 2), "api"),
        (Fault::html(Endpoint::DebugToken), "an HTML page"),
        (Fault::empty(Endpoint::DebugToken), "an empty body"),
        (
            Fault::truncated(Endpoint::DebugToken),
            "a truncated or invalid JSON body",
        ),
        (Fault::delay(Endpoint::DebugToken, 1500), "timeout"),
    ];
    for (fault, want) in cases {
        sb.clear_faults();
        sb.add_fault(fault.clone());
        let e = c.debug_token(&t).await.unwrap_err();
        let got = match &e {
            GraphError::Transient(Transient::Api(_)) => "api",
            GraphError::Transient(Transient::BadBody { what, .. }) => what,
            GraphError::Transient(Transient::Timeout) => "timeout",
            other => panic!("{fault:?}: {other:?}"),
        };
        assert_eq!(got, want, "{fault:?}");
    }
    for code in [4, 17, 32, 613, 80007, 130429] {
        sb.clear_faults();
        sb.add_fault(Fault::rate_limit(Endpoint::Phone, code));
        match c.phone_number(&t, sandbox::DEMO_PHONE_NUMBER_ID).await {
            Err(GraphError::Transient(Transient::RateLimited { api, retry_after })) => {
                assert_eq!(api.code, code as i64);
                assert!(retry_after.is_some(), "the wait Meta asks for is read");
            }
            other => panic!("rate limit {code}: {other:?}"),
        }
    }
    sb.clear_faults();
    sb.add_fault(Fault::auth_exception(Endpoint::Messages));
    assert!(matches!(
        c.send_text(&t, sandbox::DEMO_PHONE_NUMBER_ID, "15550001111", "hi").await,
        Err(GraphError::TokenDead(api)) if api.code == 0 && api.status == 401
    ));
}

#[tokio::test]
async fn transient_faults_are_retried_until_success() {
    let sb = sandbox().await;
    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        4,
        Duration::from_secs(5),
    );
    let t = Secret::new(sb.issue_token(prod_spec()));
    sb.add_fault(Fault::server_error(Endpoint::DebugToken, 500, 2));
    sb.add_fault(Fault::html(Endpoint::DebugToken));
    sb.add_fault(Fault::truncated(Endpoint::DebugToken));
    let before = sb.stats().requests_for(Endpoint::DebugToken);
    assert!(c.debug_token(&t).await.unwrap().valid());
    assert_eq!(
        sb.stats().requests_for(Endpoint::DebugToken) - before,
        4,
        "three faults, then success"
    );

    // A rate limit asking for more than a few seconds (Meta's usual minute, or an hour) is not
    // waited out inside one call: the call ends at once with the wait recorded, and is not
    // sent again.
    for secs in [60, 3600] {
        sb.clear_faults();
        sb.add_fault(Fault::RateLimit {
            endpoint: Endpoint::Phone,
            count: 0,
            code: 4,
            retry_after_secs: secs,
            // Seconds as a gateway would add them; Meta itself sends only minutes.
            retry_after_header: true,
        });
        let before = sb.stats().requests_for(Endpoint::Phone);
        let started = std::time::Instant::now();
        match c.phone_number(&t, sandbox::DEMO_PHONE_NUMBER_ID).await {
            Err(e @ GraphError::Transient(Transient::RateLimited { .. })) => {
                let GraphError::Transient(Transient::RateLimited { retry_after, .. }) = &e else {
                    unreachable!()
                };
                assert_eq!(*retry_after, Some(Duration::from_secs(secs)));
                assert!(
                    e.to_string()
                        .contains(&format!("Meta asks to wait {secs}s")),
                    "{e}"
                );
            }
            other => panic!("{secs}s: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(sb.stats().requests_for(Endpoint::Phone) - before, 1);
    }
    sb.clear_faults();
}

#[tokio::test]
async fn dead_tokens_and_misconfiguration_are_never_retried() {
    let sb = sandbox().await;
    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        4,
        Duration::from_secs(5),
    );
    let t = Secret::new(sb.issue_token(prod_spec()));
    sb.invalidate(t.expose(), 460);
    let before = sb.stats().requests_for(Endpoint::Phone);
    assert!(matches!(
        c.phone_number(&t, sandbox::DEMO_PHONE_NUMBER_ID).await,
        Err(GraphError::TokenDead(_))
    ));
    assert_eq!(sb.stats().requests_for(Endpoint::Phone) - before, 1);
}

#[tokio::test]
async fn errors_never_carry_the_token_or_the_url() {
    // Nothing listens on port 9: a connection error, whose reqwest text would include the URL
    // with `input_token` unless stripped.
    let canary = "EAAGCANARYcanaryCANARY0000000000000000000000000000";
    let c = client_for(
        "http://127.0.0.1:9",
        "CANARYSECRET00000000000000000000",
        1,
        Duration::from_secs(2),
    );
    let e = c.debug_token(&Secret::new(canary)).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        matches!(e, GraphError::Transient(Transient::Network(_))),
        "{shown}"
    );
    assert!(
        !shown.contains("CANARY") && !shown.contains("input_token"),
        "{shown}"
    );
}

#[tokio::test]
async fn app_tokens_inspect_as_app_type() {
    let sb = sandbox().await;
    let app = Secret::new(sb.issue_token(TokenSpec::system_user_60d().kind(TokenKind::App)));
    let info = client(&sb).debug_token(&app).await.unwrap();
    assert_eq!(info.token_type.as_deref(), Some("APP"));
}

// ---------------------------------------------------------------------------------------------
// Rotation calls: refresh, mint, revoke.

fn expiry_secs(info: &tokenwarden::graph::TokenInfo) -> i64 {
    match info.expires_at {
        Expiry::At(t) => t.as_second(),
        other => panic!("expected an expiry, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_makes_a_later_token_and_the_old_one_keeps_working() {
    let sb = sandbox().await;
    let c = client(&sb);
    let old = Secret::new(sb.issue_token(prod_spec().issued_ago(10 * DAY)));
    let old_expiry = expiry_secs(&c.debug_token(&old).await.unwrap());

    let r = c.refresh_token(&old).await.unwrap();
    assert_ne!(r.token, old);
    let secs = r.expires_in.expect("Meta says expires_in").as_secs() as i64;
    assert!(
        (60 * DAY - 3600..=60 * DAY + 3600).contains(&secs),
        "{secs}"
    );
    let info = c.debug_token(&r.token).await.unwrap();
    assert!(info.valid(), "{info:?}");
    assert_eq!(info.token_type.as_deref(), Some("SYSTEM_USER"));
    assert!(info.targets_waba(sandbox::DEMO_WABA_ID));
    assert!(
        expiry_secs(&info) > old_expiry,
        "the new token lasts longer"
    );
    assert!(
        c.debug_token(&old).await.unwrap().valid(),
        "the old token works until its own expiry"
    );
    assert_eq!(sb.stats().refreshed, 1);

    // A never-expiring token cannot be refreshed: the strict sandbox refuses it (a lenient
    // server would trade it for a 60-day one, the trap the rotation avoids before asking).
    let never =
        Secret::new(sb.issue_token(TokenSpec::system_user_never().wabas(&[sandbox::DEMO_WABA_ID])));
    assert!(matches!(
        c.refresh_token(&never).await,
        Err(GraphError::Misconfigured(api)) if api.code == 100
    ));
}

#[tokio::test]
async fn refresh_refusals_are_classified() {
    let sb = sandbox().await;
    let t = Secret::new(sb.issue_token(prod_spec()));
    let wrong = client_for(
        &sb.base_url(),
        "ffffffffffffffffffffffffffffffff",
        1,
        Duration::from_secs(5),
    );
    match wrong.refresh_token(&t).await {
        Err(GraphError::OwnCredentials(api)) => {
            assert_eq!(api.code, 1);
            assert!(api.message.contains("client secret"), "{api}");
        }
        other => panic!("{other:?}"),
    }

    // Meta's 5xx "unknown error" is code 1 typed OAuthException too: not a wrong secret.
    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        3,
        Duration::from_secs(5),
    );
    sb.add_fault(Fault::server_error(Endpoint::Refresh, 500, 1));
    let before = sb.stats().requests_for(Endpoint::Refresh);
    assert!(matches!(
        c.refresh_token(&t).await,
        Err(GraphError::Transient(Transient::Api(_)))
    ));
    assert_eq!(
        sb.stats().requests_for(Endpoint::Refresh) - before,
        1,
        "a refresh that may have reached Meta is not sent again"
    );
    assert_eq!(sb.stats().refreshed, 0);

    sb.advance_clock(61 * DAY);
    match c.refresh_token(&t).await {
        Err(GraphError::TokenDead(api)) => assert_eq!((api.code, api.subcode), (190, Some(463))),
        other => panic!("an expired token cannot be refreshed: {other:?}"),
    }
    assert!(matches!(
        c.refresh_token(&Secret::new(format!("EAAG{}", "Q".repeat(150))))
            .await,
        Err(GraphError::TokenDead(_))
    ));
}

#[tokio::test]
async fn mint_makes_system_user_tokens_both_ways() {
    let sb = sandbox().await;
    let c = client(&sb);
    let admin =
        Secret::new(sb.issue_token(TokenSpec::system_user_never().wabas(&[sandbox::DEMO_WABA_ID])));

    let expiring = c
        .mint_token(&admin, sandbox::DEMO_SYSTEM_USER_ID, true, &[])
        .await
        .unwrap();
    let info = c.debug_token(&expiring).await.unwrap();
    assert!(info.valid(), "{info:?}");
    assert_eq!(info.token_type.as_deref(), Some("SYSTEM_USER"));
    assert_eq!(info.user_id.as_deref(), Some(sandbox::DEMO_SYSTEM_USER_ID));
    assert!(info.missing_whatsapp_scopes().is_empty(), "{info:?}");
    assert!(info.targets_waba(sandbox::DEMO_WABA_ID));
    let in_secs = expiry_secs(&info) - sb.now();
    assert!(
        (60 * DAY - 5..=60 * DAY + 3600).contains(&in_secs),
        "about 60 days, on the hour: {in_secs}"
    );

    let forever = c
        .mint_token(&admin, sandbox::DEMO_SYSTEM_USER_ID, false, &[])
        .await
        .unwrap();
    assert_ne!(forever, expiring);
    let info = c.debug_token(&forever).await.unwrap();
    assert!(info.valid());
    assert_eq!(info.expires_at, Expiry::Never);
    assert_eq!(sb.stats().minted, 2);
}

#[tokio::test]
async fn mint_refusals_are_classified() {
    let sb = sandbox().await;
    let c = client(&sb);
    let admin = Secret::new(sb.issue_token(prod_spec()));

    let e = c
        .mint_token(&admin, sandbox::UNINSTALLED_SYSTEM_USER_ID, true, &[])
        .await
        .unwrap_err();
    // Meta's generic "(#100) Invalid parameter" comes with its user title and message.
    let shown = e.to_string();
    assert!(
        shown.contains("App not installed") && shown.contains("is not installed"),
        "{shown}"
    );
    assert!(
        matches!(&e, GraphError::Misconfigured(api) if api.code == 100),
        "{e:?}"
    );
    match c.mint_token(&admin, "999000999000", true, &[]).await {
        Err(GraphError::Misconfigured(api)) => assert_eq!((api.code, api.subcode), (100, Some(33))),
        other => panic!("{other:?}"),
    }
    let before = sb.stats().requests_for(Endpoint::Any);
    assert!(matches!(
        c.mint_token(&admin, "", true, &[]).await,
        Err(GraphError::Misconfigured(_))
    ));
    assert_eq!(
        sb.stats().requests_for(Endpoint::Any),
        before,
        "refused locally"
    );

    // A page token may not mint: Meta's permissions error.
    let page = Secret::new(sb.issue_token(prod_spec().kind(TokenKind::Page)));
    assert!(matches!(
        c.mint_token(&page, sandbox::DEMO_SYSTEM_USER_ID, true, &[]).await,
        Err(GraphError::Misconfigured(api)) if api.code == 200
    ));
    // A dead admin token is TokenDead (about the admin token).
    sb.invalidate(admin.expose(), 460);
    assert!(matches!(
        c.mint_token(&admin, sandbox::DEMO_SYSTEM_USER_ID, true, &[]).await,
        Err(GraphError::TokenDead(api)) if api.subcode == Some(460)
    ));
    assert_eq!(sb.stats().minted, 0);
}

#[tokio::test]
async fn mint_is_never_sent_twice_once_meta_may_have_acted() {
    let sb = sandbox().await;
    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        3,
        Duration::from_millis(400),
    );
    let admin = Secret::new(sb.issue_token(prod_spec()));
    let mints = || sb.stats().requests_for(Endpoint::Mint);

    for fault in [
        Fault::server_error(Endpoint::Mint, 500, 2),
        Fault::server_error(Endpoint::Mint, 503, 1),
        Fault::html(Endpoint::Mint),
        Fault::truncated(Endpoint::Mint),
        Fault::delay(Endpoint::Mint, 1500),
    ] {
        sb.clear_faults();
        sb.add_fault(fault.clone());
        let before = mints();
        let e = c
            .mint_token(&admin, sandbox::DEMO_SYSTEM_USER_ID, true, &[])
            .await
            .unwrap_err();
        assert!(matches!(e, GraphError::Transient(_)), "{fault:?}: {e:?}");
        assert_eq!(mints() - before, 1, "{fault:?}: exactly one mint request");
    }
    // The truncated answer was cut after Meta made the token: one token, sent once. (The
    // delayed one may or may not have been made: the sandbox drops a request whose client left.)
    let minted = sb.stats().minted;
    assert!((1..=2).contains(&minted), "{minted}");

    // A rate limit is a refusal before anything happened: waited out and sent again.
    sb.clear_faults();
    sb.add_fault(Fault::RateLimit {
        endpoint: Endpoint::Mint,
        count: 1,
        code: 4,
        retry_after_secs: 1,
        // Seconds as a gateway would add them; Meta itself sends only minutes.
        retry_after_header: true,
    });
    let before = mints();
    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        3,
        Duration::from_secs(5),
    );
    let t = c
        .mint_token(&admin, sandbox::DEMO_SYSTEM_USER_ID, true, &[])
        .await
        .unwrap();
    assert!(c.debug_token(&t).await.unwrap().valid());
    assert_eq!(mints() - before, 2);
    assert_eq!(sb.stats().minted, minted + 1);
}

#[tokio::test]
async fn revoke_kills_the_old_token_at_once() {
    let sb = sandbox().await;
    let c = client(&sb);
    let old = Secret::new(sb.issue_token(prod_spec()));
    let new = c.refresh_token(&old).await.unwrap().token;

    // The sandbox answers Meta's documented `{"success":"true",}`, trailing comma included.
    c.revoke_token(&old, &new).await.unwrap();
    assert_eq!(sb.stats().revoked, 1);
    let info = c.debug_token(&old).await.unwrap();
    assert!(!info.valid());
    assert_eq!(
        info.error.map(|e| (e.code, e.subcode)),
        Some((190, Some(466)))
    );
    assert!(c.debug_token(&new).await.unwrap().valid());
    assert!(matches!(
        c.phone_number(&old, sandbox::DEMO_PHONE_NUMBER_ID).await,
        Err(GraphError::TokenDead(api)) if api.subcode == Some(466)
    ));

    // Revoking is idempotent: an already revoked token is revoked again without error.
    c.revoke_token(&old, &new).await.unwrap();
    assert_eq!(sb.stats().revoked, 2);
    // A token may revoke itself.
    let other = Secret::new(sb.issue_token(prod_spec()));
    c.revoke_token(&other, &other).await.unwrap();
    assert!(!c.debug_token(&other).await.unwrap().valid());
}

#[tokio::test]
async fn revoke_refusals_are_classified_and_faults_retried() {
    let sb = sandbox().await;
    let old = Secret::new(sb.issue_token(prod_spec()));
    let caller = Secret::new(sb.issue_token(prod_spec()));
    let wrong = client_for(
        &sb.base_url(),
        "ffffffffffffffffffffffffffffffff",
        1,
        Duration::from_secs(5),
    );
    assert!(matches!(
        wrong.revoke_token(&old, &caller).await,
        Err(GraphError::OwnCredentials(api)) if api.code == 1
    ));

    let c = client_for(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        3,
        Duration::from_secs(5),
    );
    // A dead caller: 190, which does not say which of the two tokens it is about.
    let dead_caller = Secret::new(sb.issue_token(prod_spec()));
    sb.invalidate(dead_caller.expose(), 460);
    assert!(matches!(
        c.revoke_token(&old, &dead_caller).await,
        Err(GraphError::TokenDead(_))
    ));
    assert!(matches!(
        c.revoke_token(&Secret::new(format!("EAAG{}", "Q".repeat(150))), &caller)
            .await,
        Err(GraphError::TokenDead(_))
    ));
    assert_eq!(sb.stats().revoked, 0);
    assert!(c.debug_token(&old).await.unwrap().valid());

    // Revoking is idempotent, so faults are retried, including an answer cut short after the
    // revoke happened.
    sb.add_fault(Fault::server_error(Endpoint::Revoke, 500, 1));
    sb.add_fault(Fault::truncated(Endpoint::Revoke));
    let before = sb.stats().requests_for(Endpoint::Revoke);
    c.revoke_token(&old, &caller).await.unwrap();
    assert_eq!(sb.stats().requests_for(Endpoint::Revoke) - before, 3);
    assert!(!c.debug_token(&old).await.unwrap().valid());
}

#[tokio::test]
async fn rotation_errors_never_carry_tokens_or_the_secret() {
    const SECRET: &str = "CANARYSECRET00000000000000000000";
    let canary = Secret::new("EAAGCANARYcanaryCANARY0000000000000000000000000000");
    let admin = Secret::new("EAAGADMINCANARYcanary000000000000000000000000000000");
    // Nothing listens on port 9: reqwest's error text would include the URL unless stripped.
    let c = client_for("http://127.0.0.1:9", SECRET, 2, Duration::from_secs(2));
    let mut shown = Vec::new();
    let e = c.refresh_token(&canary).await.unwrap_err();
    assert!(
        matches!(e, GraphError::Transient(Transient::Network(_))),
        "{e:?}"
    );
    shown.push(format!("{e} {e:?}"));
    let e = c
        .mint_token(&admin, sandbox::DEMO_SYSTEM_USER_ID, true, &[])
        .await
        .unwrap_err();
    shown.push(format!("{e} {e:?}"));
    let e = c.revoke_token(&canary, &admin).await.unwrap_err();
    shown.push(format!("{e} {e:?}"));

    // And Meta's own error messages, from the sandbox.
    let sb = sandbox().await;
    let t = sb.issue_token(prod_spec());
    let tok = Secret::new(t.clone());
    let wrong = client_for(&sb.base_url(), SECRET, 1, Duration::from_secs(5));
    let c = client(&sb);
    for e in [
        wrong.refresh_token(&tok).await.unwrap_err(),
        wrong.revoke_token(&tok, &tok).await.unwrap_err(),
        wrong
            .mint_token(&tok, sandbox::DEMO_SYSTEM_USER_ID, true, &[])
            .await
            .unwrap_err(),
        c.mint_token(&tok, sandbox::UNINSTALLED_SYSTEM_USER_ID, true, &[])
            .await
            .unwrap_err(),
        c.revoke_token(&canary, &tok).await.unwrap_err(),
    ] {
        shown.push(format!("{e} {e:?}"));
    }
    sb.advance_clock(61 * DAY);
    let e = c.refresh_token(&tok).await.unwrap_err();
    shown.push(format!("{e} {e:?}"));

    let all = shown.join("\n");
    assert_no_leak(
        &all,
        &[
            canary.expose(),
            admin.expose(),
            &t,
            SECRET,
            sandbox::DEMO_APP_SECRET,
            "CANARY",
            "client_secret=",
            "fb_exchange_token=",
            "access_token=",
        ],
        "Graph errors",
    );
}

/// Threads' app access token checks a Threads app's own secret without any token: accepted,
/// a wrong (or reset) secret and an unknown app are tokenwarden's own credentials, a fault is
/// transient, and neither the secret nor the app token reaches an error, even when the answer
/// quotes the request back. Instagram has no such call: nothing is sent.
#[tokio::test]
async fn a_product_apps_secret_is_checked_on_threads_and_not_on_instagram() {
    use tokenwarden::graph::AppCheck;
    use tokenwarden::meta::kind::Kind;
    let sb = sandbox().await;
    let c = client(&sb);
    let right = Secret::new(sandbox::OTHER_APP_SECRET);
    let got = c
        .check_kind_app(Kind::Threads, sandbox::OTHER_APP_ID, &right)
        .await;
    assert_eq!(got, Ok(AppCheck::Accepted));
    assert_eq!(sb.stats().requests_for(Endpoint::ThreadsAppToken), 1);

    // The Meta app's secret is not the Threads app's.
    let wrong = Secret::new(sandbox::DEMO_APP_SECRET);
    match c
        .check_kind_app(Kind::Threads, sandbox::OTHER_APP_ID, &wrong)
        .await
    {
        Err(GraphError::OwnCredentials(api)) => assert_eq!(api.code, 1, "{api}"),
        other => panic!("{other:?}"),
    }
    match c
        .check_kind_app(Kind::Threads, "111122223333444", &right)
        .await
    {
        Err(GraphError::OwnCredentials(api)) => assert_eq!(api.code, 101, "{api}"),
        other => panic!("an unknown app id: {other:?}"),
    }

    // An answer that quotes the whole request back: classified by its code, scrubbed (of a
    // secret that is not the Meta app's, which the client scrubs anyway).
    sb.add_fault(Fault::Echo {
        endpoint: Endpoint::ThreadsAppToken,
        count: 1,
        code: 1,
    });
    let pasted = "0123456789abcdef0123456789abcdef";
    let echoed = c
        .check_kind_app(Kind::Threads, sandbox::OTHER_APP_ID, &Secret::new(pasted))
        .await;
    assert!(
        matches!(echoed, Err(GraphError::OwnCredentials(_))),
        "{echoed:?}"
    );
    let text = format!("{echoed:?} {}", echoed.as_ref().unwrap_err());
    assert!(
        text.contains("client_secret="),
        "the echo came back: {text}"
    );
    assert_no_leak(&text, &[pasted], "the app check's error");

    sb.add_fault(Fault::server_error(Endpoint::ThreadsAppToken, 500, 2));
    let t = c
        .check_kind_app(Kind::Threads, sandbox::OTHER_APP_ID, &right)
        .await;
    assert!(matches!(t, Err(GraphError::Transient(_))), "{t:?}");

    let before = sb.stats().requests_for(Endpoint::Any);
    for kind in [Kind::Instagram, Kind::Whatsapp] {
        let got = c.check_kind_app(kind, sandbox::OTHER_APP_ID, &wrong).await;
        assert_eq!(got, Ok(AppCheck::NotCheckable), "{kind}");
    }
    assert_eq!(
        sb.stats().requests_for(Endpoint::Any),
        before,
        "Instagram's app secret cannot be checked alone: nothing is sent"
    );
}
