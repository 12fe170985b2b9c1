//! `tokenwarden doctor` through the real binary against the Graph sandbox.

use tokenwarden::sandbox::{self, Endpoint, Fault, Sandbox, TokenSpec};

use crate::util::{
    TokenEntry, Workspace, assert_no_leak, moto_create, prod_spec, sandbox, sandbox_with, unique,
};

/// The line of check `id` in the text checklist.
fn line<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("no `{id}` line in:\n{out}"))
}

#[tokio::test]
async fn a_healthy_system_user_token_passes_every_check() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
    let run = tokio::task::spawn_blocking(move || (ws.run(&["doctor"]), ws))
        .await
        .unwrap()
        .0;
    assert_eq!(run.code, 0, "{run:?}");
    for id in [
        "store", "value", "valid", "type", "expiry", "scopes", "waba", "phone",
    ] {
        assert!(
            line(&run.stdout, id).trim_start().starts_with('✓'),
            "{id}: {run:?}"
        );
    }
    assert!(
        line(&run.stdout, "phone").contains("+1 555-010-4477 (BillByteKOT), quality GREEN"),
        "{run:?}"
    );
    assert!(line(&run.stdout, "type").contains("system-user token"));
    assert!(
        line(&run.stdout, "expiry").contains("UTC") && line(&run.stdout, "expiry").contains(" P"),
        "{run:?}"
    );
    assert!(run.stdout.contains("1 healthy, 0 with problems"));
    assert_no_leak(
        &run.all(),
        &[&token, sandbox::DEMO_APP_SECRET],
        "doctor output",
    );
}

#[tokio::test]
async fn json_output_carries_every_mark() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
    let run = tokio::task::spawn_blocking(move || ws.run(&["doctor", "--json"]))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let checks = v["tokens"][0]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 8);
    assert!(checks.iter().all(|c| c["mark"] == "pass"), "{checks:?}");
    assert_eq!(v["tokens"][0]["token"], "prod");
    assert_no_leak(
        &run.all(),
        &[&token, sandbox::DEMO_APP_SECRET],
        "doctor --json",
    );
}

/// Runs doctor on one token and returns (exit code, stdout).
async fn doctor_one(sb: &Sandbox, token: &str, extra: &'static str) -> crate::util::Run {
    let mut entry = TokenEntry::new("t", token);
    entry.extra = extra;
    let ws = Workspace::new(sb, &[entry]);
    let run = tokio::task::spawn_blocking(move || ws.run(&["doctor"]))
        .await
        .unwrap();
    assert_no_leak(
        &run.all(),
        &[token, sandbox::DEMO_APP_SECRET],
        "doctor output",
    );
    run
}

#[tokio::test]
async fn an_expired_token_fails_with_the_steps_to_replace_it() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    sb.advance_clock(61 * 86_400);
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    let valid = line(&run.stdout, "valid");
    assert!(
        valid.trim_start().starts_with('✗') && valid.contains("expired") && valid.contains("463"),
        "{run:?}"
    );
    assert!(run.stdout.contains("Generate new token"), "{run:?}");
}

#[tokio::test]
async fn a_revoked_token_fails_as_revoked() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    sb.invalidate(&token, 466);
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(line(&run.stdout, "valid").contains("revoked"), "{run:?}");
}

#[tokio::test]
async fn a_token_without_whatsapp_scopes_fails_scopes_and_waba() {
    let sb = sandbox().await;
    let token = sb.issue_token(
        TokenSpec::system_user_60d()
            .scopes(&["business_management"])
            .wabas(&[]),
    );
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    let scopes = line(&run.stdout, "scopes");
    assert!(
        scopes.trim_start().starts_with('✗')
            && scopes
                .contains("missing whatsapp_business_management and whatsapp_business_messaging"),
        "{run:?}"
    );
    assert!(
        line(&run.stdout, "waba").trim_start().starts_with('✗'),
        "{run:?}"
    );
}

#[tokio::test]
async fn user_and_temporary_tokens_are_flagged() {
    let sb = sandbox().await;
    let user = sb.issue_token(TokenSpec::user().wabas(&[sandbox::DEMO_WABA_ID]));
    let run = doctor_one(&sb, &user, "").await;
    assert!(
        line(&run.stdout, "type").contains("owner's session"),
        "{run:?}"
    );
    let temp = sb.issue_token(TokenSpec::temporary_24h().wabas(&[sandbox::DEMO_WABA_ID]));
    let run = doctor_one(&sb, &temp, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        line(&run.stdout, "type").contains("24 hours")
            || line(&run.stdout, "type").contains("within a day"),
        "{run:?}"
    );
}

#[tokio::test]
async fn the_display_number_given_as_phone_id_is_named_with_the_right_id() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    let ws = Workspace::new(&sb, &[TokenEntry::new("t", &token)]);
    let text = std::fs::read_to_string(&ws.config)
        .unwrap()
        .replace(sandbox::DEMO_PHONE_NUMBER_ID, "15550104477");
    crate::util::write_private(&ws.config, &text);
    let run = tokio::task::spawn_blocking(move || ws.run(&["doctor"]))
        .await
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "you entered the phone number; its id is {}",
            sandbox::DEMO_PHONE_NUMBER_ID
        )),
        "{run:?}"
    );
}

/// A reset app secret: the app token's own inspection is refused too, so doctor names the
/// app's secret (not another app, not a dead token).
#[tokio::test]
async fn a_reset_app_secret_is_tokenwardens_problem_not_a_dead_token() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    sb.reset_app_secret("0123456789abcdef0123456789abcdef");
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    let valid = line(&run.stdout, "valid");
    assert!(
        valid.contains("own app secret") && valid.contains("says nothing about the token"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("expired") && !run.stdout.contains("revoked"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains("app_secret"),
        "the fix names the setting: {run:?}"
    );
}

/// A token of another app: tokenwarden's app token inspects fine, so doctor names the token
/// as another app's, with the Access Token Debugger step, and not the app's secret.
#[tokio::test]
async fn a_token_of_another_app_is_named_as_such() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec().app(sandbox::OTHER_APP_ID));
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    let valid = line(&run.stdout, "valid");
    assert!(valid.contains("belongs to another app"), "{run:?}");
    assert!(run.stdout.contains("Access Token Debugger"), "{run:?}");
    assert!(!run.stdout.contains("own app secret"), "{run:?}");
}

#[tokio::test]
async fn one_5xx_is_retried_and_a_persistent_proxy_page_is_cannot_check() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    sb.add_fault(Fault::server_error(Endpoint::DebugToken, 500, 1));
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 0, "one 5xx is retried: {run:?}");

    sb.add_fault(Fault::html(Endpoint::DebugToken).times(0));
    let run = doctor_one(&sb, &token, "").await;
    assert_eq!(run.code, 1, "{run:?}");
    let valid = line(&run.stdout, "valid");
    assert!(
        valid.contains("cannot check")
            && valid.contains("HTML page")
            && valid.contains("not the token's fault"),
        "{run:?}"
    );
}

#[tokio::test]
async fn send_test_sends_and_maps_recipient_and_template_errors() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    let ws = Workspace::new(&sb, &[TokenEntry::new("t", &token)]);
    let ws = std::sync::Arc::new(ws);
    let w = ws.clone();
    let ok = tokio::task::spawn_blocking(move || w.run(&["doctor", "--send-test", "15550001111"]))
        .await
        .unwrap();
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(line(&ok.stdout, "send_text").contains("accepted"), "{ok:?}");
    assert!(
        line(&ok.stdout, "send_template").contains("accepted"),
        "{ok:?}"
    );
    assert_eq!(sb.sent_messages().len(), 2);

    let w = ws.clone();
    let bad = tokio::task::spawn_blocking(move || {
        w.run(&["doctor", "--send-test", "15559999999", "--template", "nope"])
    })
    .await
    .unwrap();
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stdout.contains("allowed recipients"), "{bad:?}");
    let w = ws.clone();
    let bad = tokio::task::spawn_blocking(move || {
        w.run(&["doctor", "--send-test", "15550001111", "--template", "nope"])
    })
    .await
    .unwrap();
    assert!(
        line(&bad.stdout, "send_template").contains("template not found"),
        "{bad:?}"
    );
    assert!(bad.stdout.contains("Message templates"), "{bad:?}");

    // Nothing is sent without the flag.
    let before = sb.sent_messages().len();
    let w = ws.clone();
    tokio::task::spawn_blocking(move || w.run(&["doctor"]))
        .await
        .unwrap();
    assert_eq!(sb.sent_messages().len(), before);
}

#[tokio::test]
async fn a_token_in_aws_secrets_manager_is_read_through_the_default_chain() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec());
    let id = unique("doctor-aws");
    let body =
        serde_json::json!({ "OTHER": "keep-me", "WHATSAPP_ACCESS_TOKEN": token }).to_string();
    moto_create(&id, &body).await;
    let extra: &'static str = Box::leak(
        format!(
            "store = {{ kind = \"aws\", secret_id = \"{id}\", region = \"us-east-1\", endpoint = \"{}\", json_key = \"WHATSAPP_ACCESS_TOKEN\" }}",
            crate::util::moto().endpoint
        )
        .into_boxed_str(),
    );
    let entry = TokenEntry {
        name: "aws-prod",
        value: None,
        extra,
    };
    let ws = Workspace::new(&sb, &[entry]);
    let run = tokio::task::spawn_blocking(move || {
        let cfg = ws.config.to_str().unwrap().to_string();
        crate::util::run(
            &["--config", &cfg, "doctor"],
            &[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        line(&run.stdout, "store")
            .contains(&format!("AWS secret `{id}` key `WHATSAPP_ACCESS_TOKEN`")),
        "{run:?}"
    );
    assert_no_leak(
        &run.all(),
        &[&token, sandbox::DEMO_APP_SECRET],
        "doctor output",
    );
}

/// Canary values for every secret doctor touches: none may appear in any output, on the
/// success path, the dead-token path, the fault path or the send path, even at debug level.
#[tokio::test]
async fn canary_tokens_and_app_secret_appear_in_no_output() {
    const APP_SECRET: &str = "CANARYAPPSECRETcanary00000000000";
    const GOOD: &str = "EAAGCANARYGOODcanaryGOOD0000000000000000000000000000000000000000";
    const DEAD: &str = "EAAGCANARYDEADcanaryDEAD0000000000000000000000000000000000000000";
    let scenario = sandbox::Scenario::from_toml(&format!(
        r#"
[[app]]
id = "{app}"
name = "BillByteKOT Receipts"
secret = "{APP_SECRET}"
require_app_secret = true

[[token]]
value = "{GOOD}"

[[token]]
value = "{DEAD}"
status = "invalidated"
subcode = 460
"#,
        app = sandbox::DEMO_APP_ID
    ))
    .unwrap();
    let sb = sandbox_with(scenario).await;
    let ws = Workspace::new(
        &sb,
        &[TokenEntry::new("good", GOOD), TokenEntry::new("dead", DEAD)],
    );
    std::fs::write(ws.config.parent().unwrap().join("app-secret"), APP_SECRET).unwrap();
    let ws = std::sync::Arc::new(ws);
    let mut outputs = Vec::new();
    for args in [
        vec!["doctor"],
        vec!["doctor", "--json"],
        vec!["doctor", "--send-test", "15550001111"],
        vec!["doctor", "--token", "good"],
    ] {
        let w = ws.clone();
        outputs.push(
            tokio::task::spawn_blocking(move || w.run(&args))
                .await
                .unwrap(),
        );
    }
    assert_eq!(outputs[0].code, 1, "{:?}", outputs[0]);
    assert!(
        outputs[0]
            .stdout
            .contains("the owner changed their password"),
        "{:?}",
        outputs[0]
    );
    assert_eq!(outputs[3].code, 0, "{:?}", outputs[3]);
    sb.add_fault(Fault::truncated(Endpoint::DebugToken).times(0));
    let w = ws.clone();
    outputs.push(
        tokio::task::spawn_blocking(move || w.run(&["doctor"]))
            .await
            .unwrap(),
    );
    sb.clear_faults();
    sb.reset_app_secret("0123456789abcdef0123456789abcdef");
    let w = ws.clone();
    outputs.push(
        tokio::task::spawn_blocking(move || w.run(&["doctor"]))
            .await
            .unwrap(),
    );
    for run in &outputs {
        let all = run.all();
        assert!(
            !all.to_lowercase().contains("canary"),
            "a canary leaked:\n{all}"
        );
    }
    // The state this run may leave is the token store only, which holds tokens by design.
    let leftovers: Vec<_> = std::fs::read_dir(ws.config.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        3,
        "config, app-secret and tokens.json only: {leftovers:?}"
    );
}

/// Issue 14, point 23: strings Graph sent (the application's name, a phone number's verified
/// name) reach the terminal without their escapes and control characters, so a hostile or
/// broken answer can neither recolour nor retitle the terminal nor forge a passing line.
#[tokio::test]
async fn strings_from_graph_reach_the_terminal_without_escapes_or_controls() {
    let mut scenario = sandbox::Scenario::demo();
    scenario.apps[0].name = "Evil\u{1b}]0;pwned\u{7}App\u{1b}[2J\u{1b}[31m".into();
    for w in &mut scenario.wabas {
        for p in &mut w.phones {
            p.verified_name = "Shop\r  ✓ valid    forged\u{1b}c".into();
        }
    }
    let sb = sandbox_with(scenario).await;
    let token = sb.issue_token(prod_spec());
    let ws = Workspace::new(&sb, &[TokenEntry::new("prod", &token)]);
    let run = tokio::task::spawn_blocking(move || ws.run(&["doctor"]))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.stdout.contains('\u{1b}')
            && !run.stdout.contains('\r')
            && !run.stdout.contains('\u{7}'),
        "{:?}",
        run.stdout
    );
    // The words are still shown, on their own line.
    assert!(run.stdout.contains("EvilApp"), "{}", run.stdout);
    assert!(
        line(&run.stdout, "phone").contains("Shop   ✓ valid    forged"),
        "{}",
        run.stdout
    );
    assert_no_leak(
        &run.all(),
        &[&token, sandbox::DEMO_APP_SECRET],
        "doctor output",
    );
}
