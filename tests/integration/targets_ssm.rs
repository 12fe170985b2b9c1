//! The `ssm_parameter` target: a rotation writes a `SecureString` in moto's Parameter Store and
//! reads it back; a later wave failing puts the old value back; the daemon repairs a parameter
//! changed behind its back; against a loopback Parameter Store (the JSON 1.1 protocol), access
//! denied names the IAM action, throttling is retried, a hang fails within the target's timeout,
//! and no token is anywhere but in the `PutParameter` body.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::util::{
    AWS_ENV, Fake, FakeState, SinkOpts, SmtpSink, TokenEntry, Workspace, assert_no_leak,
    daemon_until, due_token, moto, moto_parameter, moto_put_parameter, moto_ssm, prod_spec,
    rotate_with, sandbox, sections, state_dir, unique,
};

fn target(name: &str, wave: u32, parameter: &str, endpoint: &str, timeout: &str) -> String {
    format!(
        "[[token.target]]\nname = \"{name}\"\nkind = \"ssm_parameter\"\nwave = {wave}\nparameter = \"{parameter}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\ntimeout = \"{timeout}\"\n"
    )
}

const FAILING_WAVE_2: &str = "[[token.target]]\nname = \"prod-worker\"\nkind = \"exec\"\nwave = 2\ncommand = [\"/bin/sh\", \"-c\", \"echo worker refused >&2; exit 3\"]\n";

#[tokio::test]
async fn a_rotation_writes_the_secure_string_and_reads_it_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let param = format!("/{}/WHATSAPP_ACCESS_TOKEN", unique("tw-ssm"));
    moto_put_parameter(&param, &old).await;
    let r = rotate_with(
        &sb,
        &old,
        &target("ssm-prod", 1, &param, &moto().endpoint, "30s"),
        &AWS_ENV,
    )
    .await;
    assert_eq!(r.dry.code, 0, "{:?}", r.dry);
    let want = format!(
        "wave 1: ssm-prod: target ssm-prod (SSM parameter {param}); holds the current token (read back with GetParameter (WithDecryption))"
    );
    assert!(r.dry.stdout.contains(&want), "{want:?} in {:?}", r.dry);
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_ne!(r.current, old);
    assert_eq!(moto_parameter(&param).await, r.current);
    let got = moto_ssm()
        .await
        .get_parameter()
        .name(&param)
        .send()
        .await
        .unwrap();
    let p = got.parameter().unwrap();
    assert_eq!(
        p.r#type(),
        Some(&aws_sdk_ssm::types::ParameterType::SecureString)
    );
    assert_eq!(p.version(), 2, "one write");
    let status = crate::util::tw(&r.ws.config, &["status"], &AWS_ENV, None).await;
    assert!(
        status
            .stdout
            .contains("target       ssm-prod (ssm_parameter): ok"),
        "{status:?}"
    );
    assert_no_leak(
        &format!("{}{}", r.dry.all(), r.run.all()),
        &[&old, &r.current],
        "output",
    );
}

#[tokio::test]
async fn a_later_wave_failing_puts_the_old_value_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let param = format!("/{}/token", unique("tw-ssm"));
    moto_put_parameter(&param, &old).await;
    let targets = format!(
        "{}{FAILING_WAVE_2}",
        target("ssm-prod", 1, &param, &moto().endpoint, "30s")
    );
    let r = rotate_with(&sb, &old, &targets, &AWS_ENV).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert!(r.run.stdout.contains("prod-worker"), "{:?}", r.run);
    assert_eq!(r.current, old, "the old token stays current");
    assert_eq!(moto_parameter(&param).await, old, "back on the old token");
    // The candidate did reach the parameter before the rollback: old, candidate, old.
    let history = moto_ssm()
        .await
        .get_parameter_history()
        .name(&param)
        .with_decryption(true)
        .send()
        .await
        .unwrap();
    let values: Vec<&str> = history
        .parameters()
        .iter()
        .filter_map(|p| p.value())
        .collect();
    assert_eq!(values.len(), 3, "{}", values.len());
    assert_eq!((values[0], values[2]), (old.as_str(), old.as_str()));
    assert_ne!(values[1], old);
    assert!(values[1].starts_with("EAA"), "the candidate was written");
    assert_no_leak(&r.run.all(), &[&old, values[1]], "output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_repairs_a_parameter_changed_behind_its_back() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(prod_spec());
    let param = format!("/{}/token", unique("tw-ssm"));
    moto_put_parameter(&param, "EAAGstalefromlastyear0000").await;
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&token),
            extra: &target("ssm-prod", 0, &param, &moto().endpoint, "30s"),
        }],
        &sections(sink.port, ""),
    );
    let holds = async || moto_parameter(&param).await == token;
    // First check: a sync (tokenwarden never delivered here before).
    let (ok, first) = daemon_until(&ws.config, &AWS_ENV, Duration::from_secs(60), &holds).await;
    assert!(ok, "synced: {first:?}");
    // Someone restores a backup: the next daemon's check reads it back and repairs it.
    moto_put_parameter(&param, "EAAGrestoredfrombackup0000").await;
    let (ok, second) = daemon_until(&ws.config, &AWS_ENV, Duration::from_secs(60), &holds).await;
    assert!(ok, "repaired: {second:?}");
    let audit = std::fs::read_to_string(state_dir(&ws.config).join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"drifted\":[[\"ssm-prod\""), "{audit}");
    assert_no_leak(
        &format!("{}{}{audit}", first.all(), second.all()),
        &[&token],
        "daemon output and audit",
    );
}

/// A Parameter Store on loopback speaking the JSON 1.1 protocol (`X-Amz-Target:
/// AmazonSSM.<Action>`, errors as `{"__type", "message"}` with 400), holding one value, with
/// the faults a test asks for on `PutParameter`.
#[derive(Debug, Default)]
struct Ssm {
    value: Option<String>,
    deny_put: bool,
    throttle_puts: u32,
    hang_puts: bool,
}

fn aws_error(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        serde_json::json!({"__type": code, "message": message}).to_string(),
    )
        .into_response()
}

async fn ssm(State(s): State<FakeState<Ssm>>, headers: HeaderMap, body: Bytes) -> Response {
    // SigV4 with the test credentials: what a real endpoint needs before anything else.
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("AWS4-HMAC-SHA256 Credential=testing/") {
        return aws_error(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    let action = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let ok = |v: serde_json::Value| {
        (
            StatusCode::OK,
            [("content-type", "application/x-amz-json-1.1")],
            v.to_string(),
        )
            .into_response()
    };
    match action.as_str() {
        "AmazonSSM.GetParameter" => {
            assert_eq!(req["WithDecryption"], true, "read back decrypted");
            let value = s.lock().unwrap().data.value.clone();
            match value {
                Some(v) => ok(serde_json::json!({"Parameter": {
                    "Name": req["Name"], "Type": "SecureString", "Value": v, "Version": 1,
                    "ARN": "arn:aws:ssm:us-east-1:123456789012:parameter/app/token",
                }})),
                None => aws_error("ParameterNotFound", ""),
            }
        }
        "AmazonSSM.PutParameter" => {
            let (deny, throttle, hang) = {
                let mut g = s.lock().unwrap();
                let d = &mut g.data;
                let throttle = d.throttle_puts > 0;
                d.throttle_puts = d.throttle_puts.saturating_sub(1);
                (d.deny_put, throttle, d.hang_puts)
            };
            if hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if deny {
                return aws_error(
                    "AccessDeniedException",
                    "User: arn:aws:sts::123456789012:assumed-role/tokenwarden/i-0abc is not authorized to perform: ssm:PutParameter on resource: arn:aws:ssm:us-east-1:123456789012:parameter/app/token because no identity-based policy allows the ssm:PutParameter action",
                );
            }
            if throttle {
                return aws_error("ThrottlingException", "Rate exceeded");
            }
            assert_eq!(req["Type"], "SecureString");
            assert_eq!(req["Overwrite"], true);
            s.lock().unwrap().data.value = req["Value"].as_str().map(str::to_string);
            ok(serde_json::json!({"Version": 2, "Tier": "Standard"}))
        }
        other => aws_error("InvalidAction", &format!("{other} is not served here")),
    }
}

async fn fake_ssm(value: &str, data: Ssm) -> Fake<Ssm> {
    Fake::start(
        axum::Router::new().route("/", axum::routing::post(ssm)),
        Ssm {
            value: Some(value.to_string()),
            ..data
        },
    )
    .await
}

fn puts(fake: &Fake<Ssm>) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.header("x-amz-target") == Some("AmazonSSM.PutParameter"))
        .count()
}

#[tokio::test]
async fn access_denied_names_the_action_throttling_is_retried_and_a_hang_times_out() {
    let sb = sandbox().await;

    // Denied: the rollout stops, naming the IAM action to grant; nothing was written.
    let old = due_token(&sb);
    let fake = fake_ssm(
        &old,
        Ssm {
            deny_put: true,
            ..Ssm::default()
        },
    )
    .await;
    let r = rotate_with(
        &sb,
        &old,
        &target("ssm-prod", 1, "/app/token", &fake.url(), "30s"),
        &AWS_ENV,
    )
    .await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert!(r.run.stdout.contains("access denied"), "{:?}", r.run);
    assert!(
        r.run.stdout.contains("needs `ssm:PutParameter`"),
        "{:?}",
        r.run
    );
    assert_eq!(r.current, old);
    assert_eq!(fake.with(|d| d.value.clone()), Some(old.clone()));
    let denied = r;

    // Throttled twice: the SDK retries, the third write lands.
    let old = due_token(&sb);
    let fake = fake_ssm(
        &old,
        Ssm {
            throttle_puts: 2,
            ..Ssm::default()
        },
    )
    .await;
    let r = rotate_with(
        &sb,
        &old,
        &target("ssm-prod", 1, "/app/token", &fake.url(), "30s"),
        &AWS_ENV,
    )
    .await;
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_eq!(puts(&fake), 3, "two throttled, one written");
    assert_eq!(fake.with(|d| d.value.clone()), Some(r.current.clone()));
    // The canary scan over what Parameter Store received: the token is in the written value
    // only, never in a path, a header or a read.
    for req in fake.requests() {
        let is_put = req.header("x-amz-target") == Some("AmazonSSM.PutParameter");
        let mut seen = format!("{} {} {:?}", req.method, req.uri, req.headers);
        if !is_put {
            seen.push_str(&req.body);
        }
        assert_no_leak(&seen, &[&old, &r.current], "a request to Parameter Store");
        if is_put {
            let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
            assert_eq!(body["Value"], r.current.as_str());
        }
    }
    let throttled = r;

    // A write that never answers fails within the target's timeout, and nothing changed.
    let old = due_token(&sb);
    let fake = fake_ssm(
        &old,
        Ssm {
            hang_puts: true,
            ..Ssm::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let r = rotate_with(
        &sb,
        &old,
        &target("ssm-prod", 1, "/app/token", &fake.url(), "2s"),
        &AWS_ENV,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert_ne!(r.run.code, 0, "{:?}", r.run);
    assert_eq!(r.current, old);
    assert_eq!(fake.with(|d| d.value.clone()), Some(old.clone()));
    for x in [&denied, &throttled, &r] {
        assert_no_leak(
            &format!("{}{}", x.dry.all(), x.run.all()),
            &[&x.old, &x.current],
            "output",
        );
    }
}
