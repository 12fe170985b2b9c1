//! Issue 13, "Meta contract": tokenwarden against the sandbox in its strict setting (at least
//! as strict as Meta's documentation) and with each quirk real Meta has shown switched on.
//! One test per point of `docs/meta-contract.md`; each runs the real binary where a user would.

use std::time::Duration;

use tokenwarden::graph::{GraphClient, GraphError, Transient};
use tokenwarden::sandbox::{self, Endpoint, Sandbox, Scenario, TokenSpec, UsageModel};
use tokenwarden::secret::Secret;
use tokenwarden::store::SecretStore;
use tokenwarden::store::file::FileStore;

use crate::util::{
    DAY, TokenEntry, Workspace, assert_no_leak, current, graph_client, is_valid, mint_source,
    sandbox, sandbox_with, tw,
};

fn audit(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.state_dir().join("audit.jsonl")).unwrap_or_default()
}

/// A 60-day system-user token 45 days into its life: due for rotation.
fn due() -> TokenSpec {
    TokenSpec::system_user_60d().issued_ago(45 * DAY)
}

fn client(sb: &Sandbox) -> GraphClient {
    graph_client(
        &sb.base_url(),
        sandbox::DEMO_APP_SECRET,
        3,
        Duration::from_secs(5),
        None,
    )
}

/// Point 1: Meta's exchange may hand back the same string with a later expiry. It is
/// "extended in place": nothing staged, promoted, delivered or revoked, and the token stays
/// current, valid and healthy.
#[tokio::test]
async fn a_refresh_that_returns_the_same_token_extends_it_in_place_and_never_revokes() {
    let sb = sandbox().await;
    sb.set_quirks(|q| q.refresh_same_string = true);
    let old = sb.issue_token(due());
    let mail = tempfile::tempdir().unwrap();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: "source = \"refresh\"\nrevoke_after = \"0s\"\n",
        }],
        &format!(
            "attempts = 2\nretry_delay = \"10ms\"\n[email]\nkind = \"folder\"\npath = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"oncall@example.com\"]\n",
            mail.path().display()
        ),
    );
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("extended in place"), "{r:?}");
    // One email, saying so.
    let emails: Vec<String> = std::fs::read_dir(mail.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    assert_eq!(emails.len(), 1, "{emails:?}");
    assert!(emails[0].contains("EXTENDED prod"), "{}", emails[0]);
    let unfolded = emails[0]
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace(['\r', '\n'], " ");
    assert!(unfolded.contains("extended in place"), "{}", emails[0]);
    assert_eq!(current(&ws, "prod").await, old, "still the current token");
    assert!(is_valid(&sb, &old).await, "never revoked");
    let stats = sb.stats();
    assert_eq!((stats.refreshed, stats.revoked), (1, 0));
    let info = client(&sb).debug_token(&Secret::new(&old)).await.unwrap();
    match info.expires_at {
        tokenwarden::graph::Expiry::At(t) => {
            assert!(t.as_second() > sb.now() + 59 * DAY, "the new, later expiry")
        }
        other => panic!("{other:?}"),
    }
    let log = audit(&ws);
    assert!(log.contains("extended in place"), "{log}");
    assert!(log.contains("\"result\":\"extended_in_place\""), "{log}");
    assert!(!log.contains("\"step\":\"promote\""), "{log}");

    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 0, "healthy afterwards: {check:?}");
    let status = tw(&ws.config, &["status"], &[], None).await;
    assert!(status.stdout.contains("extended in place"), "{status:?}");
    for (what, text) in [
        ("rotate", r.all()),
        ("audit", log),
        ("status", status.all()),
    ] {
        assert_no_leak(&text, &[&old, sandbox::DEMO_APP_SECRET], what);
    }
}

/// Point 1, the last line of defence: whatever the rotation record says, the revoke path
/// refuses a value equal to the store's current token, and says so in the audit log.
#[tokio::test]
async fn the_revoke_step_refuses_the_current_token_whatever_the_record_says() {
    let sb = sandbox().await;
    let live = sb.issue_token(due());
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&live),
            extra: "revoke_after = \"0s\"\n",
        }],
    );
    // The same value staged and promoted (a person re-staging the token by hand): both
    // AWSCURRENT and AWSPREVIOUS hold it, and a record at the revoke step names the previous.
    let store = FileStore::new(ws.store.clone(), "prod".into());
    let (v1, _) = store.current_version().await.unwrap();
    let id = "0c6f3d1e-4b1a-4e8e-9a57-3f5a2b9c8d10";
    let v2 = store.put_pending(&Secret::new(&live), id).await.unwrap();
    store.promote(&v2, &v1).await.unwrap();
    let fp = Secret::new(&live).fingerprint();
    let then = jiff::Timestamp::from_second(sb.now() - 3600).unwrap();
    let mut rec = tokenwarden::rotation::Rotation::begin(
        id.into(),
        "prod",
        tokenwarden::rotation::Origin::Staged,
        "test".into(),
        tokenwarden::rotation::Side {
            version: v1.0.clone(),
            fingerprint: fp,
        },
        then,
    );
    rec.new = Some(tokenwarden::rotation::Side {
        version: v2.0.clone(),
        fingerprint: fp,
    });
    rec.step = tokenwarden::rotation::Step::Revoke.into();
    rec.promoted_at = Some(then);
    rec.revoke_at = Some(then);
    let rotations = ws.state_dir().join("rotations");
    std::fs::create_dir_all(&rotations).unwrap();
    std::fs::write(
        rotations.join("prod.json"),
        serde_json::to_vec(&rec).unwrap(),
    )
    .unwrap();

    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("refusing to revoke"), "{r:?}");
    assert!(is_valid(&sb, &live).await, "the live token was not revoked");
    assert_eq!(sb.stats().revoked, 0);
    let log = audit(&ws);
    assert!(log.contains("\"revoke_refused\""), "{log}");
    assert_no_leak(&(r.all() + &log), &[&live], "refusal");
}

/// Point 2: Meta's own SYSTEM_USER example lists no `target_ids`. Such a healthy token is
/// healthy (the WABA read decides), `doctor` says how it decided, and a minted successor
/// without target_ids passes validation.
#[tokio::test]
async fn a_system_user_token_without_target_ids_is_decided_by_reading_the_waba() {
    let sb = sandbox().await;
    sb.set_quirks(|q| q.omit_target_ids = true);
    let token = sb.issue_token(due());
    let dir = tempfile::tempdir().unwrap().keep();
    let (mint, admin) = mint_source(&sb, &dir, sandbox::DEMO_SYSTEM_USER_ID);
    let extra = format!("{mint}revoke_after = \"0s\"\n");
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&token),
            extra: &extra,
        }],
    );
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 0, "{check:?}");
    let doctor = tw(&ws.config, &["doctor"], &[], None).await;
    assert_eq!(doctor.code, 0, "{doctor:?}");
    assert!(doctor.stdout.contains("decided by the read"), "{doctor:?}");

    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "the minted successor is accepted: {r:?}");
    let new = current(&ws, "prod").await;
    assert_ne!(new, token);
    assert_eq!((sb.stats().minted, sb.stats().revoked), (1, 1));
    assert!(is_valid(&sb, &new).await);
    assert_no_leak(
        &(r.all() + &doctor.all()),
        &[&token, &new, &admin],
        "rotate",
    );
}

/// Point 2, the other way: no target_ids, and the WABA read is refused (the system user was
/// never given the WABA): unusable, as before.
#[tokio::test]
async fn without_target_ids_a_refused_waba_read_is_unusable() {
    let sb = sandbox().await;
    sb.set_quirks(|q| q.omit_target_ids = true);
    let token = sb.issue_token(due().wabas(&[sandbox::OTHER_WABA_ID]));
    let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 2, "{check:?}");
    assert!(check.stdout.contains("unusable"), "{check:?}");
    let doctor = tw(&ws.config, &["doctor"], &[], None).await;
    assert!(doctor.stdout.contains("was refused"), "{doctor:?}");
}

/// Point 4: batch items read the app token only from the top-level form parameter (Meta's
/// "Batch requests"); `check` over several tokens goes through a batch and works.
#[tokio::test]
async fn check_of_several_tokens_works_when_batches_read_the_token_only_from_the_form() {
    let sb = sandbox().await;
    let (a, b, c) = (
        sb.issue_token(due()),
        sb.issue_token(due()),
        sb.issue_token(due()),
    );
    let ws = Workspace::new(
        &sb,
        &[
            TokenEntry::new("a", &a),
            TokenEntry::new("b", &b),
            TokenEntry::new("c", &c),
        ],
    );
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 0, "{check:?}");
    assert!(sb.stats().batch_calls >= 1, "went through a batch");
    assert!(!check.stdout.contains("credentials"), "{check:?}");
}

/// Point 5: with "Require App Secret" on, `oauth/revoke` made with a system-user token needs
/// its appsecret_proof; the rotation's revoke carries it, and the old token dies.
#[tokio::test]
async fn revoke_carries_the_appsecret_proof_an_app_requiring_it_wants() {
    let sb = sandbox().await;
    sb.set_require_app_secret(true);
    let c = client(&sb);
    let caller = Secret::new(sb.issue_token(due()));
    let old = Secret::new(sb.issue_token(due()));
    c.revoke_token(&old, &caller).await.unwrap();
    assert!(!is_valid(&sb, old.expose()).await);
    assert!(is_valid(&sb, caller.expose()).await);
    // Revoking itself works the same way.
    c.revoke_token(&caller, &caller).await.unwrap();
    assert!(!is_valid(&sb, caller.expose()).await);
    assert_eq!(sb.stats().revoked, 2);
}

/// Point 6: mint asks for the scopes the current token has, and validation rejects a
/// candidate that lost one, naming it.
#[tokio::test]
async fn a_successor_keeps_every_scope_of_the_current_token() {
    let sb = sandbox().await;
    let scopes = [
        "whatsapp_business_management",
        "whatsapp_business_messaging",
        "business_management",
    ];
    let old = sb.issue_token(due().scopes(&scopes));
    let dir = tempfile::tempdir().unwrap().keep();
    let (mint, _) = mint_source(&sb, &dir, sandbox::DEMO_SYSTEM_USER_ID);
    let extra = format!("{mint}revoke_after = \"0s\"\n");
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
    );
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let new = current(&ws, "prod").await;
    let info = client(&sb).debug_token(&Secret::new(&new)).await.unwrap();
    for s in scopes {
        assert!(info.has_scope(s), "{s}: {:?}", info.scopes);
    }

    // A candidate without business_management is refused by name, by the same validation
    // the rotation runs: here already when a person stages it.
    let poorer = sb.issue_token(TokenSpec::system_user_60d());
    let ws2 = Workspace::new(&sb, &[TokenEntry::new("prod", &new)]);
    let staged = tw(
        &ws2.config,
        &["stage", "--token", "prod"],
        &[],
        Some(&poorer),
    )
    .await;
    assert_eq!(staged.code, 1, "{staged:?}");
    assert!(
        staged
            .stdout
            .contains("lacks business_management, which the current token has"),
        "{staged:?}"
    );
    let store = FileStore::new(ws2.store.clone(), "prod".into());
    assert!(store.pending().await.unwrap().is_none(), "nothing staged");
    assert_eq!(current(&ws2, "prod").await, new, "current untouched");
}

/// Point 7: business-use-case throttling (code 80008, `estimated_time_to_regain_access` in
/// minutes, no Retry-After) is never "invalid": `check` says throttled and when access
/// returns, `doctor` says so too, and the token is not rotated.
#[tokio::test]
async fn a_business_throttle_is_reported_as_such_never_as_a_dead_token() {
    let sb = sandbox().await;
    sb.throttle_business(30);
    let token = sb.issue_token(due());
    let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 3, "UNKNOWN, not CRITICAL: {check:?}");
    assert!(check.stdout.contains("throttled by Meta"), "{check:?}");
    assert!(
        check.stdout.contains("access returns in about 30 minutes"),
        "{check:?}"
    );
    let doctor = tw(&ws.config, &["doctor"], &[], None).await;
    assert!(doctor.stdout.contains("throttl"), "{doctor:?}");
    assert_eq!(
        sb.stats().requests_for(Endpoint::Phone),
        2,
        "one read each, no retry loop"
    );
    sb.advance_clock(31 * 60);
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 0, "access returned: {check:?}");
}

/// Point 7: the app's hourly quota counts each batch item; once Meta refuses, the pass stops
/// (no further batch, nothing retried in a loop) and the rest waits for access to return.
#[tokio::test]
async fn a_fleet_check_stops_at_the_apps_quota_instead_of_retrying_into_it() {
    let mut s = Scenario::demo();
    s.usage = UsageModel {
        window_secs: 3600,
        call_limit: 120,
        enforce: true,
    };
    let sb = sandbox_with(s).await;
    // Issued before the quota counts anything: the admin API is not Graph.
    let tokens: Vec<Secret> = (0..200)
        .map(|_| Secret::new(sb.issue_token(due())))
        .collect();
    let results = client(&sb).debug_tokens(&tokens, 1).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(GraphError::Transient(Transient::RateLimited { .. }))))
        .count();
    assert_eq!(ok + limited, 200, "nothing else: {results:?}");
    assert!((100..=120).contains(&ok), "{ok} answered within the quota");
    // Every token was asked about at most once: the refused ones were not sent again, and
    // no batch followed the refusal.
    let asked = sb.stats().requests_for(Endpoint::DebugToken);
    assert!(
        asked <= 150,
        "{asked} debug_token items sent for 200 tokens"
    );
}

/// Point 8: a `debug_token` answer without `is_valid` (or without the expiry, issue time and
/// type) is unknown for those facts, never a dead token; the phone read proves it works.
#[tokio::test]
async fn missing_debug_token_fields_are_unknown_not_bad() {
    let sb = sandbox().await;
    let token = sb.issue_token(due());
    let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
    sb.set_quirks(|q| q.omit_debug_fields = vec!["is_valid".into()]);
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_eq!(check.code, 0, "{check:?}");
    let doctor = tw(&ws.config, &["doctor"], &[], None).await;
    assert!(doctor.stdout.contains("did not say whether"), "{doctor:?}");

    sb.set_quirks(|q| {
        q.omit_debug_fields = vec![
            "expires_at".into(),
            "issued_at".into(),
            "type".into(),
            "data_access_expires_at".into(),
        ]
    });
    let check = tw(&ws.config, &["check"], &[], None).await;
    assert_ne!(check.code, 2, "not CRITICAL: {check:?}");
    assert!(!check.stdout.contains("INVALID"), "{check:?}");
    assert!(!check.stdout.to_lowercase().contains("dead"), "{check:?}");
}

/// Point 9: a business that must use expiring tokens refuses `lifetime = "never"`: one clear
/// failure naming `set_token_expires_in_60_days` and `lifetime = "60d"`, the current token
/// untouched, and the record marks that only a config change helps.
#[tokio::test]
async fn a_business_that_must_use_expiring_tokens_gets_one_clear_failure() {
    let sb = sandbox().await;
    sb.set_quirks(|q| q.require_expiring_tokens = true);
    let old = sb.issue_token(due());
    let dir = tempfile::tempdir().unwrap().keep();
    let (mint, _) = mint_source(&sb, &dir, sandbox::DEMO_SYSTEM_USER_ID);
    let mint = mint.replace(" }\n", ", lifetime = \"never\" }\n");
    assert!(mint.contains("lifetime = \"never\""), "{mint}");
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &mint,
        }],
    );
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    for words in ["set_token_expires_in_60_days", "lifetime = \"60d\""] {
        assert!(r.stdout.contains(words), "{words}: {r:?}");
    }
    assert_eq!(current(&ws, "prod").await, old);
    assert!(is_valid(&sb, &old).await);
    assert_eq!(sb.stats().minted, 0);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.state_dir().join("rotations/prod.json")).unwrap())
            .unwrap();
    assert!(
        record["needs_config_change"]
            .as_str()
            .is_some_and(|k| k.contains("never")),
        "{record}"
    );
}
