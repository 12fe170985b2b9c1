//! Rotation end to end through the real binary: `stage`, `rotate` (and `--dry-run`),
//! `rollback`, for each source, against the Graph sandbox and both stores. With the
//! `failpoints` feature, the crash tests stop the process after every step and run it again.

use tokenwarden::sandbox::{self, Sandbox, TokenSpec};
use tokenwarden::secret::Secret;
use tokenwarden::store::SecretStore;
use tokenwarden::store::file::FileStore;

use crate::util::{
    AWS_ENV, TokenEntry, Workspace, assert_no_leak, current, is_valid, moto_current, sandbox, tw,
};

/// A workspace whose token `prod` is minted for the demo system user by an admin token kept
/// in a file; `extra` adds lines to the `[[token]]`.
fn mint_workspace(sb: &Sandbox, current: &str, extra: &str) -> (Workspace, String) {
    let dir = tempfile::tempdir().unwrap().keep();
    let (mint, admin) = crate::util::mint_source(sb, &dir, sandbox::DEMO_SYSTEM_USER_ID);
    let entry = format!("{mint}{extra}");
    let ws = Workspace::new(
        sb,
        &[TokenEntry {
            name: "prod",
            value: Some(current),
            extra: &entry,
        }],
    );
    (ws, admin)
}

fn good() -> TokenSpec {
    TokenSpec::system_user_60d().issued_ago(45 * 86_400)
}

#[tokio::test]
async fn mint_rotates_validates_promotes_and_revokes_the_old_token() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let (ws, admin) = mint_workspace(&sb, &old, "revoke_after = \"0s\"\n");

    let dry = tw(
        &ws.config,
        &["rotate", "--token", "prod", "--dry-run"],
        &[],
        None,
    )
    .await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains("mint a 60-day system-user token"),
        "{dry:?}"
    );
    assert_eq!(sb.stats().minted, 0, "a dry run mints nothing");
    assert_eq!(current(&ws, "prod").await, old);

    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("complete"), "{r:?}");
    let new = current(&ws, "prod").await;
    assert_ne!(new, old);
    assert!(is_valid(&sb, &new).await);
    assert!(!is_valid(&sb, &old).await, "the old token is revoked");
    let stats = sb.stats();
    assert_eq!((stats.minted, stats.revoked), (1, 1));

    let audit = std::fs::read_to_string(ws.state_dir().join("audit.jsonl")).unwrap();
    for step in [
        "obtain",
        "validate",
        "deliver",
        "promote",
        "revoke",
        "verify_revoked",
    ] {
        assert!(
            audit.contains(&format!("\"step\":\"{step}\"")),
            "{step}: {audit}"
        );
    }
    let record = std::fs::read_to_string(ws.state_dir().join("rotations/prod.json")).unwrap();
    for (what, text) in [("output", r.all()), ("audit", audit), ("record", record)] {
        assert_no_leak(&text, &[&old, &new, &admin, sandbox::DEMO_APP_SECRET], what);
    }
}

#[tokio::test]
async fn refresh_rotates_a_sixty_day_token() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: "source = \"refresh\"\nrevoke_after = \"0s\"\n",
        }],
    );
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let new = current(&ws, "prod").await;
    assert_ne!(new, old);
    assert!(is_valid(&sb, &new).await && !is_valid(&sb, &old).await);
    assert_eq!((sb.stats().refreshed, sb.stats().revoked), (1, 1));
}

#[tokio::test]
async fn refresh_is_refused_for_an_expired_or_never_expiring_token() {
    let sb = sandbox().await;
    let expired = sb.issue_token(good().expiring_in(-3600));
    let never = sb.issue_token(TokenSpec::system_user_never());
    let ws = Workspace::new(
        &sb,
        &[
            TokenEntry {
                name: "expired",
                value: Some(&expired),
                extra: "source = \"refresh\"\n",
            },
            TokenEntry {
                name: "never",
                value: Some(&never),
                extra: "source = \"refresh\"\n",
            },
        ],
    );
    let r = tw(&ws.config, &["rotate", "--token", "expired"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("cannot be refreshed"), "{r:?}");
    let r = tw(&ws.config, &["rotate", "--token", "never"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("never expires"), "{r:?}");
    assert_eq!(sb.stats().refreshed, 0);
    assert_eq!(current(&ws, "expired").await, expired);
    assert_eq!(current(&ws, "never").await, never);
}

#[tokio::test]
async fn config_check_refuses_refresh_for_a_token_known_to_never_expire() {
    use tokenwarden::policy::{Expires, TokenFacts};
    use tokenwarden::state::{Snapshot, StateStore, TokenState};
    let sb = sandbox().await;
    let never = sb.issue_token(TokenSpec::system_user_never());
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&never),
            extra: "source = \"refresh\"\n",
        }],
    );
    let ok = tw(&ws.config, &["config", "check"], &[], None).await;
    assert_eq!(ok.code, 0, "nothing known yet: {ok:?}");
    let mut snap = Snapshot {
        format: 1,
        ..Snapshot::default()
    };
    snap.tokens.insert(
        "prod".into(),
        TokenState {
            facts: Some(TokenFacts {
                fingerprint: Secret::new(never.clone()).fingerprint(),
                app_id: Some(sandbox::DEMO_APP_ID.into()),
                application: None,
                token_type: Some("SYSTEM_USER".into()),
                expires: Expires::Never,
                data_access_expires_at: None,
                issued_at: None,
                scopes: vec![],
                wabas: vec![],
            }),
            ..TokenState::default()
        },
    );
    StateStore::new(&ws.state_dir()).save(&snap).unwrap();
    let r = tw(&ws.config, &["config", "check"], &[], None).await;
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("never expires"), "{r:?}");
}

#[tokio::test]
async fn staged_tokens_are_linted_validated_then_promoted() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: "revoke_after = \"0s\"\n",
        }],
    );
    // Nothing staged: rotate says how to stage.
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("tokenwarden stage --token prod"), "{r:?}");

    // Wrongly pasted values are refused before Meta sees them.
    let new = sb.issue_token(TokenSpec::system_user_60d());
    for (pasted, word) in [
        (format!("Bearer {new}\n"), "Bearer"),
        (format!("\"{new}\"\n"), "quotes"),
        (format!("WHATSAPP_ACCESS_TOKEN={new}\n"), "KEY=value"),
        (
            format!("{}|{}\n", sandbox::DEMO_APP_ID, sandbox::DEMO_APP_SECRET),
            "app access token",
        ),
    ] {
        let r = tw(
            &ws.config,
            &["stage", "--token", "prod"],
            &[],
            Some(&pasted),
        )
        .await;
        assert_eq!(r.code, 65, "{word}: {r:?}");
        assert!(r.all().contains(word), "{word}: {r:?}");
        assert_no_leak(&r.all(), &[&new, sandbox::DEMO_APP_SECRET], "stage output");
    }
    // Candidates Meta would not accept are refused.
    let no_scope =
        sb.issue_token(TokenSpec::system_user_60d().scopes(&["whatsapp_business_management"]));
    let other_app = sb.issue_token(TokenSpec::system_user_60d().app(sandbox::OTHER_APP_ID));
    for (t, word) in [
        (&no_scope, "lacks whatsapp_business_messaging"),
        (&other_app, "belongs to another app"),
    ] {
        let r = tw(
            &ws.config,
            &["stage", "--token", "prod"],
            &[],
            Some(&format!("{t}\n")),
        )
        .await;
        assert_eq!(r.code, 1, "{word}: {r:?}");
        assert!(r.stdout.contains(word), "{word}: {r:?}");
    }
    assert!(
        FileStore::new(ws.store.clone(), "prod".into())
            .pending()
            .await
            .unwrap()
            .is_none()
    );

    let r = tw(
        &ws.config,
        &["stage", "--token", "prod"],
        &[],
        Some(&format!("{new}\n")),
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(current(&ws, "prod").await, old, "staging does not promote");
    let dry = tw(
        &ws.config,
        &["rotate", "--token", "prod", "--dry-run"],
        &[],
        None,
    )
    .await;
    assert!(dry.stdout.contains("passes every check"), "{dry:?}");
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(current(&ws, "prod").await, new);
    assert!(!is_valid(&sb, &old).await);
    assert_eq!(sb.stats().minted, 0);
}

#[tokio::test]
async fn a_bad_candidate_staged_behind_tokenwardens_back_is_rejected_and_unstaged() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let sink = crate::util::SmtpSink::start(&crate::util::SinkOpts::default());
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &old)],
        &format!(
            "attempts = 1\n[email]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"tw@example.com\"\nto = [\"oncall@example.com\"]\n",
            sink.port
        ),
    );
    let bad = sb.issue_token(TokenSpec::system_user_60d().wabas(&[]));
    FileStore::new(ws.store.clone(), "prod".into())
        .put_pending(
            &Secret::new(bad.clone()),
            "0b6f3d4e-2a51-4c8e-9f7a-1d2c3b4a5e6f",
        )
        .await
        .unwrap();
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("rejected"), "{r:?}");
    assert!(
        r.stdout.contains(sandbox::DEMO_WABA_ID),
        "names the failed check: {r:?}"
    );
    assert_eq!(current(&ws, "prod").await, old);
    assert!(is_valid(&sb, &old).await);
    assert!(
        FileStore::new(ws.store.clone(), "prod".into())
            .pending()
            .await
            .unwrap()
            .is_none()
    );
    // One email names the failed check; running again (nothing staged now) sends no other.
    let again = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(again.code, 1, "{again:?}");
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let (_, raw) = &mails[0];
    assert!(raw.contains("ROTATION REJECTED prod"), "{raw}");
    assert!(raw.contains("tokenwarden stage --token prod"), "{raw}");
    assert_no_leak(raw, &[&old, &bad], "rejection email");
}

#[tokio::test]
async fn a_refused_mint_leaves_the_current_token_alone() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let admin = sb.issue_token(TokenSpec::system_user_never());
    let dir = tempfile::tempdir().unwrap();
    let admin_file = dir.path().join("admin");
    crate::util::write_private(&admin_file, &admin);
    let extra = format!(
        "source = \"mint\"\nmint = {{ system_user_id = \"{}\", admin_token = {{ file = \"{}\" }}, lifetime = \"never\" }}\n",
        sandbox::UNINSTALLED_SYSTEM_USER_ID,
        admin_file.display()
    );
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
    );
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("failed at step obtain"), "{r:?}");
    assert_eq!(current(&ws, "prod").await, old);
    assert_eq!(sb.stats().minted, 0);
    assert_no_leak(&r.all(), &[&old, &admin], "output");
}

#[tokio::test]
async fn the_old_token_is_revoked_only_after_the_grace_period_and_rollback_needs_it_valid() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let (ws, _) = mint_workspace(&sb, &old, "revoke_after = \"3s\"\n");
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("will be revoked at"), "{r:?}");
    let new = current(&ws, "prod").await;
    assert!(
        is_valid(&sb, &old).await,
        "still valid during the grace period"
    );
    let status = tw(&ws.config, &["status"], &[], None).await;
    assert!(
        status.stdout.contains("the old token is to be revoked at"),
        "{status:?}"
    );

    // Roll back while the old one is valid; the waiting rotation stops and never revokes.
    let r = tw(&ws.config, &["rollback", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(current(&ws, "prod").await, old);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    // A fresh rotation (the rolled-back one is over): mints again.
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        is_valid(&sb, &old).await,
        "the rolled-back rotation never revoked it"
    );
    assert_eq!(sb.stats().minted, 2);
    let newer = current(&ws, "prod").await;
    assert!(newer != new && newer != old);

    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("complete"), "resumes and revokes: {r:?}");
    assert!(!is_valid(&sb, &old).await);
    assert_eq!(sb.stats().minted, 2, "resuming mints nothing");

    // The previous version is revoked now: rolling back to it is refused.
    let r = tw(&ws.config, &["rollback", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("no longer valid"), "{r:?}");
    assert_eq!(current(&ws, "prod").await, newer);
}

/// Every point the rotation can be stopped at, in order.
#[cfg(feature = "failpoints")]
const CRASH_POINTS: [&str; 9] = [
    "rotation.after_start",
    "rotation.after_obtain",
    "rotation.after_validate",
    "dotenv.before_rename",
    "delivery.after_wave",
    "rotation.after_deliver",
    "rotation.after_promote",
    "rotation.after_revoke",
    "rotation.after_verify_revoked",
];

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_rotation_killed_after_any_step_resumes_to_the_same_end() {
    let mut survived = 0;
    for point in CRASH_POINTS {
        let sb = sandbox().await;
        let old = sb.issue_token(good());
        let apps = tempfile::tempdir().unwrap();
        let env = |app: &str| apps.path().join(app).join(".env");
        let mut targets = String::from("revoke_after = \"0s\"\n");
        for (wave, app) in [(1, "staging"), (2, "prod")] {
            std::fs::create_dir_all(apps.path().join(app)).unwrap();
            crate::util::write_private(&env(app), &format!("WHATSAPP_ACCESS_TOKEN={old}\n"));
            targets.push_str(&format!(
                "[[token.target]]\nname = \"{app}\"\nkind = \"dotenv\"\nwave = {wave}\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
                env(app).display()
            ));
        }
        let (ws, _) = mint_workspace(&sb, &old, &targets);
        let crashed = tw(
            &ws.config,
            &["rotate", "--token", "prod"],
            &[(tokenwarden::failpoint::ENV, point)],
            None,
        )
        .await;
        assert_ne!(
            crashed.code, 0,
            "{point}: the failpoint stops the process: {crashed:?}"
        );
        assert!(
            crashed.stderr.contains(&format!("failpoint {point}")),
            "{point}: {crashed:?}"
        );
        let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
        if point == "rotation.after_verify_revoked" {
            // It had finished: a new rotation starts, so check the first one's end instead.
            assert_eq!(sb.stats().minted, 2, "{point}: {r:?}");
        } else {
            assert_eq!(r.code, 0, "{point}: {r:?}");
            assert!(r.stdout.contains("complete"), "{point}: {r:?}");
            let stats = sb.stats();
            assert_eq!(
                (stats.minted, stats.revoked),
                (1, 1),
                "{point}: one mint, one revoke"
            );
            let new = current(&ws, "prod").await;
            assert_ne!(new, old, "{point}");
            assert!(is_valid(&sb, &new).await, "{point}");
            for app in ["staging", "prod"] {
                assert_eq!(
                    std::fs::read_to_string(env(app)).unwrap(),
                    format!("WHATSAPP_ACCESS_TOKEN={new}\n"),
                    "{point}: {app} ends on the new token"
                );
            }
        }
        assert!(
            !is_valid(&sb, &old).await,
            "{point}: the old token ends revoked"
        );
        survived += 1;
    }
    assert_eq!(survived, CRASH_POINTS.len());
    println!("{} crash points, {survived} survived", CRASH_POINTS.len());
}

/// A mint workspace whose token lives in key `WHATSAPP_ACCESS_TOKEN` of a JSON secret in
/// moto, beside a key that must survive; returns the workspace and the secret id.
async fn aws_mint_workspace(sb: &Sandbox, current: &str, extra: &str) -> (Workspace, String) {
    let id = crate::util::unique("tw-rotate");
    let body = serde_json::json!({ "DB_PASSWORD": "keep-me", "WHATSAPP_ACCESS_TOKEN": current });
    crate::util::moto_create(&id, &body.to_string()).await;
    let store = format!(
        "store = {{ kind = \"aws\", secret_id = \"{id}\", region = \"us-east-1\", endpoint = \"{}\", json_key = \"WHATSAPP_ACCESS_TOKEN\" }}\n{extra}",
        crate::util::moto().endpoint
    );
    let (ws, _) = mint_workspace(sb, "unused", &store);
    (ws, id)
}

async fn aws_current(id: &str) -> serde_json::Value {
    serde_json::from_str(&moto_current(id).await).unwrap()
}

#[tokio::test]
async fn aws_rotation_killed_at_promotion_resumes_and_keeps_the_other_keys() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let (ws, id) = aws_mint_workspace(&sb, &old, "revoke_after = \"0s\"\n").await;
    let env_with = |fp: &'static str| {
        let mut v = AWS_ENV.to_vec();
        v.push((tokenwarden::failpoint::ENV, fp));
        v
    };
    #[cfg(feature = "failpoints")]
    {
        let crashed = tw(
            &ws.config,
            &["rotate", "--token", "prod"],
            &env_with("rotation.after_promote"),
            None,
        )
        .await;
        assert_ne!(crashed.code, 0, "{crashed:?}");
        let now_current = aws_current(&id).await;
        assert_ne!(
            now_current["WHATSAPP_ACCESS_TOKEN"].as_str(),
            Some(old.as_str()),
            "promoted before the crash: {crashed:?}"
        );
        assert!(is_valid(&sb, &old).await, "not revoked yet");
    }
    let _ = env_with;
    let r = tw(&ws.config, &["rotate", "--token", "prod"], &AWS_ENV, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("complete"), "{r:?}");
    let secret = aws_current(&id).await;
    let new = secret["WHATSAPP_ACCESS_TOKEN"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new, old);
    assert_eq!(secret["DB_PASSWORD"], "keep-me");
    assert!(is_valid(&sb, &new).await && !is_valid(&sb, &old).await);
    assert_eq!((sb.stats().minted, sb.stats().revoked), (1, 1));
    // The old version is AWSPREVIOUS in Secrets Manager, the new one AWSCURRENT.
    let versions = crate::util::moto_client()
        .await
        .list_secret_version_ids()
        .secret_id(&id)
        .send()
        .await
        .unwrap();
    let mut stages: Vec<Vec<String>> = versions
        .versions()
        .iter()
        .map(|v| v.version_stages().to_vec())
        .filter(|s| !s.is_empty())
        .collect();
    stages.sort();
    assert_eq!(
        stages,
        vec![
            vec!["AWSCURRENT".to_string()],
            vec!["AWSPREVIOUS".to_string()]
        ]
    );
    assert_no_leak(&r.all(), &[&old, &new], "output");
}

/// Two tokenwarden instances (two hosts: separate state directories and configs) managing the
/// same Secrets Manager secret; returns both workspaces.
async fn twin_workspaces(
    sb: &Sandbox,
    id: &str,
    mint: bool,
    extra: &str,
) -> (Workspace, Workspace) {
    let store = format!(
        "store = {{ kind = \"aws\", secret_id = \"{id}\", region = \"us-east-1\", endpoint = \"{}\" }}\n{extra}",
        crate::util::moto().endpoint
    );
    let one = || {
        if mint {
            mint_workspace(sb, "unused", &store).0
        } else {
            Workspace::new(
                sb,
                &[TokenEntry {
                    name: "prod",
                    value: None,
                    extra: &store,
                }],
            )
        }
    };
    (one(), one())
}

async fn labelled_versions(id: &str) -> Vec<(String, Vec<String>)> {
    let out = crate::util::moto_client()
        .await
        .list_secret_version_ids()
        .secret_id(id)
        .send()
        .await
        .unwrap();
    let mut v: Vec<(String, Vec<String>)> = out
        .versions()
        .iter()
        .filter(|v| !v.version_stages().is_empty())
        .map(|v| {
            (
                v.version_id().unwrap().to_string(),
                v.version_stages().to_vec(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.1.cmp(&b.1));
    v
}

#[tokio::test]
async fn two_instances_racing_on_one_staged_candidate_promote_it_once() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let candidate = sb.issue_token(TokenSpec::system_user_60d());
    let id = crate::util::unique("tw-twins");
    crate::util::moto_create(&id, &old).await;
    crate::util::moto_client()
        .await
        .put_secret_value()
        .secret_id(&id)
        .secret_string(&candidate)
        .client_request_token("7c1e9f0a-5b2d-4e3f-8a6b-0c9d8e7f6a5b")
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    // The staged source, with a rotation due for both at once.
    let (a, b) = twin_workspaces(&sb, &id, false, "revoke_after = \"0s\"\n").await;
    let (ra, rb) = tokio::join!(
        tw(&a.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
        tw(&b.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
    );
    // Each instance completes it, stops because the other overtook it, or (starting after the
    // other finished) finds nothing staged any more.
    for r in [&ra, &rb] {
        assert!(
            r.code == 0
                || r.stdout.contains("rotation stopped")
                || r.stdout.contains("nothing is staged"),
            "{r:?}"
        );
    }
    assert!(
        ra.code == 0 || rb.code == 0,
        "one completes: {ra:?}\n{rb:?}"
    );
    assert_eq!(moto_current(&id).await, candidate);
    let labels: Vec<Vec<String>> = labelled_versions(&id)
        .await
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(
        labels,
        vec![
            vec!["AWSCURRENT".to_string()],
            vec!["AWSPREVIOUS".to_string()]
        ]
    );
    assert!(!is_valid(&sb, &old).await && is_valid(&sb, &candidate).await);
    // Nothing flips back: both instances, run again, leave the candidate current.
    for ws in [&a, &b] {
        let r = tw(&ws.config, &["rotate", "--token", "prod"], &AWS_ENV, None).await;
        assert_eq!(r.code, 1, "nothing staged now: {r:?}");
    }
    assert_eq!(moto_current(&id).await, candidate);
}

#[tokio::test]
async fn two_minting_instances_end_on_one_current_token_and_the_old_one_revoked() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let id = crate::util::unique("tw-twins-mint");
    crate::util::moto_create(&id, &old).await;
    let (a, b) = twin_workspaces(&sb, &id, true, "revoke_after = \"0s\"\n").await;
    // Both at once: one promotion wins; the other instance adopts the same candidate, stops,
    // or (when it minted after the winner promoted) has its own token rejected and revoked.
    let (ra, rb) = tokio::join!(
        tw(&a.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
        tw(&b.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
    );
    let before = old.clone();
    let end = moto_current(&id).await;
    assert_ne!(end, before, "{ra:?}\n{rb:?}");
    assert!(is_valid(&sb, &end).await);
    assert!(
        !is_valid(&sb, &before).await,
        "the replaced token is revoked"
    );
    assert!(sb.stats().minted <= 2, "{ra:?}\n{rb:?}");
    let labels: Vec<Vec<String>> = labelled_versions(&id)
        .await
        .into_iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(
        labels,
        vec![
            vec!["AWSCURRENT".to_string()],
            vec!["AWSPREVIOUS".to_string()]
        ]
    );
    for r in [&ra, &rb] {
        assert!(
            r.code == 0 || r.stdout.contains("rotation stopped") || r.stdout.contains("rejected"),
            "{r:?}"
        );
    }
}

/// Issue 14, point 29: four instances told to mint for one Secrets Manager secret at once.
/// One candidate becomes current; every other token they minted is revoked and confirmed
/// dead, or, where the race stayed undecided past the overtaken instance's wait (seen about
/// once in 300 runs on a loaded machine), recorded as left in its audit log: no live token
/// that nobody tracks. An overtaken instance exits 75 ("another process rotated it"), not 1.
#[tokio::test]
async fn racing_minting_instances_leave_no_live_token_behind() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let id = crate::util::unique("tw-quads");
    crate::util::moto_create(&id, &old).await;
    let (a, b) = twin_workspaces(&sb, &id, true, "revoke_after = \"0s\"\n").await;
    let (c, e) = twin_workspaces(&sb, &id, true, "revoke_after = \"0s\"\n").await;
    let (ra, rb, rc, re) = tokio::join!(
        tw(&a.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
        tw(&b.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
        tw(&c.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
        tw(&e.config, &["rotate", "--token", "prod"], &AWS_ENV, None),
    );
    let runs = [&ra, &rb, &rc, &re];
    let end = moto_current(&id).await;
    assert_ne!(end, old, "{runs:?}");
    assert!(is_valid(&sb, &end).await);
    for r in runs {
        assert!(
            r.code == 0
                || (r.code == 75 && r.stdout.contains("another process rotated it"))
                || r.stdout.contains("rejected"),
            "{r:?}"
        );
    }
    // Every token the sandbox minted is either the current one or dead.
    let state: serde_json::Value = reqwest::get(format!("{}/_sandbox/state", sb.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let end_fp = Secret::new(&end).fingerprint().to_string();
    let minted = sb.stats().minted;
    // A candidate an overtaken instance could not prove unadoptable (the race still
    // undecided after its 20 s wait, which a loaded machine can bring about) is left to expire,
    // and that instance's audit log says so (`candidate_left`): tracked, not forgotten.
    let left: Vec<String> = [&a, &b, &c, &e]
        .iter()
        .filter_map(|w| std::fs::read_to_string(w.state_dir().join("audit.jsonl")).ok())
        .flat_map(|log| {
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["event"] == "candidate_left")
                .filter_map(|v| v["fingerprint"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    let live: Vec<&serde_json::Value> = state["tokens"]
        .as_array()
        .unwrap()
        .iter()
        // Minted tokens are 60-day system-user tokens issued during the test; the admin
        // tokens never expire, and the old one was issued 45 days ago.
        .filter(|t| t["expires_at"].as_i64() != Some(0))
        .filter(|t| t["issued_at"].as_i64().unwrap() > sb.now() - 3600)
        .filter(|t| t["fingerprint"] != end_fp.as_str() && t["status"] == "valid")
        .collect();
    let untracked: Vec<&&serde_json::Value> = live
        .iter()
        .filter(|t| !left.iter().any(|f| t["fingerprint"] == f.as_str()))
        .collect();
    assert!(minted >= 1, "{runs:?}");
    assert!(
        untracked.is_empty(),
        "{} of {minted} minted tokens left live and tracked by nobody: {untracked:?}\n{runs:?}",
        untracked.len()
    );
    assert!(!is_valid(&sb, &old).await, "the replaced token is revoked");
    println!(
        "4 racing instances: {minted} minted, 1 current, {} left live (each in an audit log), 0 untracked",
        live.len()
    );
}

/// Issue 14, point 3: killed while a dotenv `reload` runs (a cgroup stop kills the command
/// too), the resumed rotation found the file already on the candidate, skipped the reload,
/// promoted and revoked the old token the application still ran on. The record now says
/// "reload started" and "finished" per target; the resume runs the unfinished reload (and the
/// verify after it) before promoting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_dotenv_reload_runs_the_reload_again_before_promoting() {
    let sb = sandbox().await;
    let old = sb.issue_token(good());
    let apps = tempfile::tempdir().unwrap();
    let env = apps.path().join(".env");
    crate::util::write_private(&env, &format!("WHATSAPP_ACCESS_TOKEN={old}\n"));
    let runs = apps.path().join("runs");
    let held = apps.path().join("held");
    // The application's reload: notes each run with the token it would load, and the first
    // run hangs (until the kill).
    let reload = format!(
        "echo $$ $(cut -d= -f2 {env}) >> {runs}; if [ ! -e {held} ]; then touch {held}; exec sleep 60; fi",
        env = env.display(),
        runs = runs.display(),
        held = held.display()
    );
    let targets = format!(
        "revoke_after = \"0s\"\n[[token.target]]\nname = \"app\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/sh\", \"-c\", {reload:?}]\ntimeout = \"90s\"\nverify_command = [\"/bin/sh\", \"-c\", \"test -s {}\"]\n",
        env.display(),
        runs.display()
    );
    let (ws, _) = mint_workspace(&sb, &old, &targets);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args([
            "--config",
            ws.config.to_str().unwrap(),
            "rotate",
            "--token",
            "prod",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !held.exists() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Kill both, as stopping the unit's cgroup does.
    let first = std::fs::read_to_string(&runs).unwrap();
    let reload_pid = first.split_whitespace().next().unwrap().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &reload_pid])
        .status();
    let state = ws.config.parent().unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("rotations/prod.json")).unwrap()).unwrap();
    assert!(
        record["reloads"]["app"]["started"].is_string()
            && record["reloads"]["app"]["finished"].is_null(),
        "the record shows the reload started and never finished: {record}"
    );
    assert_eq!(current(&ws, "prod").await, old, "not promoted yet");

    let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let new = current(&ws, "prod").await;
    assert_ne!(new, old);
    let lines: Vec<String> = std::fs::read_to_string(&runs)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 2, "the reload ran again on resume: {lines:?}");
    assert!(lines[1].ends_with(&new), "it loaded the new token");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("rotations/prod.json")).unwrap()).unwrap();
    let started: jiff::Timestamp = record["reloads"]["app"]["started"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let promoted: jiff::Timestamp = record["promoted_at"].as_str().unwrap().parse().unwrap();
    assert!(record["reloads"]["app"]["finished"].is_string(), "{record}");
    assert!(started <= promoted, "reloaded before promoting: {record}");
    assert!(
        !is_valid(&sb, &old).await,
        "the old token is revoked only now"
    );
    assert_eq!(sb.stats().minted, 1);
}

/// Issue 14, point 6: a `reload` or `verify_command` that prints the `.env` (and fails, so its
/// output lands in the error) must not put either token into the output, the rotation record,
/// the target records or the audit log. Both tokens pass through the file: the candidate on
/// the push, the old token on the rollback.
#[tokio::test]
async fn reload_and_verify_output_is_scrubbed_of_both_tokens() {
    for (name, reload, verify) in [
        ("reload", "cat {env} >&2; exit 1", "true"),
        ("verify", "true", "cat {env} >&2; exit 1"),
    ] {
        let sb = sandbox().await;
        let old = sb.issue_token(good());
        let apps = tempfile::tempdir().unwrap();
        let env = apps.path().join(".env");
        crate::util::write_private(&env, &format!("WHATSAPP_ACCESS_TOKEN={old}\n"));
        let script = |s: &str| s.replace("{env}", &env.display().to_string());
        let targets = format!(
            "[[token.target]]\nname = \"app\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/sh\", \"-c\", {:?}]\nverify_command = [\"/bin/sh\", \"-c\", {:?}]\n",
            env.display(),
            script(reload),
            script(verify)
        );
        let (ws, _) = mint_workspace(&sb, &old, &targets);
        let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
        assert_ne!(r.code, 0, "{name}: the delivery fails: {r:?}");
        assert!(
            r.all().contains("[token]"),
            "{name}: the output is shown, scrubbed: {r:?}"
        );
        let state = ws.config.parent().unwrap();
        let record = std::fs::read_to_string(state.join("rotations/prod.json")).unwrap_or_default();
        let new = record
            .contains("\"new\"")
            .then(|| {
                let v: serde_json::Value = serde_json::from_str(&record).unwrap();
                v["new"]["fingerprint"].as_str().map(String::from)
            })
            .flatten();
        assert!(new.is_some(), "{name}: a candidate was obtained: {record}");
        let mut texts = vec![("output".to_string(), r.all())];
        for sub in ["rotations", "targets", "outbox"] {
            if let Ok(dir) = std::fs::read_dir(state.join(sub)) {
                for f in dir.flatten() {
                    texts.push((
                        f.path().display().to_string(),
                        std::fs::read_to_string(f.path()).unwrap_or_default(),
                    ));
                }
            }
        }
        texts.push((
            "audit".into(),
            std::fs::read_to_string(state.join("audit.jsonl")).unwrap_or_default(),
        ));
        // The candidate's value, still staged in the store for the next attempt.
        let candidate = FileStore::new(ws.store.clone(), "prod".into())
            .pending()
            .await
            .unwrap()
            .expect("the candidate stays staged")
            .1
            .expose()
            .to_string();
        assert_ne!(candidate, old);
        for (what, text) in &texts {
            assert_no_leak(text, &[&old, &candidate], &format!("{name}: {what}"));
        }
    }
}

/// Issue 14, point 24: a target that refuses for good (a symlink, a file that is not UTF-8)
/// read as a temporary failure (exit 75) with a confusing "putting it back failed". A
/// permanent refusal exits 1 and says what to fix; the target it refused was never changed,
/// so nothing is "put back" there.
#[tokio::test]
async fn a_target_refusing_for_good_exits_1_and_says_what_to_fix() {
    for case in ["symlink", "not-utf8"] {
        let sb = sandbox().await;
        let old = sb.issue_token(good());
        let apps = tempfile::tempdir().unwrap();
        let real = apps.path().join("real.env");
        let env = apps.path().join(".env");
        match case {
            "symlink" => {
                crate::util::write_private(&real, &format!("WHATSAPP_ACCESS_TOKEN={old}\n"));
                std::os::unix::fs::symlink(&real, &env).unwrap();
            }
            _ => {
                let mut bytes = format!("WHATSAPP_ACCESS_TOKEN={old}\nNAME=caf").into_bytes();
                bytes.extend_from_slice(&[0xe9, b'\n']);
                std::fs::write(&env, bytes).unwrap();
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        let targets = format!(
            "[[token.target]]\nname = \"app\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
            env.display()
        );
        let (ws, _) = mint_workspace(&sb, &old, &targets);
        let r = tw(&ws.config, &["rotate", "--token", "prod"], &[], None).await;
        assert_eq!(r.code, 1, "{case}: {r:?}");
        let all = r.all();
        assert!(!all.contains("putting it back failed"), "{case}: {r:?}");
        assert!(all.contains("fix"), "{case}: says what to fix: {r:?}");
        assert_eq!(
            current(&ws, "prod").await,
            old,
            "{case}: the old token stays current"
        );
    }
}
