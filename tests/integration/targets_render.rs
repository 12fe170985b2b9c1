//! The `render_env_var` target against a loopback Render API that checks what the reference
//! requires (bearer key, `PUT /v1/services/{id}/env-vars/{key}` with `{"value"}`, a deploy
//! that moves from `created` through `build_in_progress` to `live` or `build_failed`, `{"id",
//! "message"}` errors): a rotation sets, reads back and deploys until live, a deploy that fails
//! fails the target and the old token is put back (and deployed), a later wave failing does
//! the same, the drift check repairs a changed var, 401/403 name the key's access, 409/429 are
//! retried, a hang times out, and no token or API key leaks.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenwarden::config::{ApiAccess, SecretRef, TargetKind};
use tokenwarden::secret::Secret;
use tokenwarden::target::TargetError;

use crate::util::{
    Fake, FakeState, Fault, assert_no_leak, due_token, open_target, push_timed, rotate_with,
    sandbox, target_config, write_private,
};

const API_KEY: &str = "rnd_CANARYapikey000011112222";
const SERVICE: &str = "srv-cq1abc2def3ghi4jkl5m";

#[derive(Debug, Default)]
struct Render {
    vars: BTreeMap<String, String>,
    /// Each deploy's id and status; a GET moves a deploy one step on.
    deploys: Vec<(String, String)>,
    /// The next deploys that end `build_failed`.
    failing_deploys: u32,
    /// Deploys that never leave `build_in_progress`.
    stuck: bool,
}

fn render_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"id": status.as_u16().to_string(), "message": message})),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {API_KEY}"))
}

async fn env_var(
    State(s): State<FakeState<Render>>,
    method: Method,
    Path((service, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return render_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if service != SERVICE {
        return render_error(StatusCode::NOT_FOUND, "service not found");
    }
    let mut g = s.lock().unwrap();
    if method == Method::PUT {
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(value) = req["value"].as_str() else {
            return render_error(StatusCode::BAD_REQUEST, "value is required");
        };
        g.data.vars.insert(key.clone(), value.to_string());
        return axum::Json(serde_json::json!({"key": key, "value": value})).into_response();
    }
    match g.data.vars.get(&key) {
        Some(v) => axum::Json(serde_json::json!({"key": key, "value": v})).into_response(),
        None => render_error(StatusCode::NOT_FOUND, "env var not found"),
    }
}

async fn deploys(
    State(s): State<FakeState<Render>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return render_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if service != SERVICE {
        return render_error(StatusCode::NOT_FOUND, "service not found");
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if req["clearCache"] != "do_not_clear" {
        return render_error(
            StatusCode::BAD_REQUEST,
            "clearCache must be clear or do_not_clear",
        );
    }
    let mut g = s.lock().unwrap();
    let id = format!("dep-{}", g.data.deploys.len() + 1);
    g.data.deploys.push((id.clone(), "created".into()));
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"id": id, "status": "created", "trigger": "api"})),
    )
        .into_response()
}

async fn deploy(
    State(s): State<FakeState<Render>>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return render_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut g = s.lock().unwrap();
    let fail = g.data.failing_deploys > 0;
    let Some(i) = g.data.deploys.iter().position(|(d, _)| *d == id) else {
        return render_error(StatusCode::NOT_FOUND, "deploy not found");
    };
    assert_eq!(service, SERVICE);
    let next = match g.data.deploys[i].1.as_str() {
        "created" => "build_in_progress",
        "build_in_progress" if g.data.stuck => "build_in_progress",
        "build_in_progress" if fail => "build_failed",
        "build_in_progress" => "live",
        other => other,
    }
    .to_string();
    if next == "build_failed" {
        g.data.failing_deploys -= 1;
    }
    g.data.deploys[i].1 = next.clone();
    axum::Json(serde_json::json!({"id": id, "status": next})).into_response()
}

async fn fake_render(token: &str) -> Fake<Render> {
    Fake::start(
        axum::Router::new()
            .route(
                "/v1/services/{service}/env-vars/{key}",
                axum::routing::get(env_var).put(env_var),
            )
            .route(
                "/v1/services/{service}/deploys",
                axum::routing::post(deploys),
            )
            .route(
                "/v1/services/{service}/deploys/{id}",
                axum::routing::get(deploy),
            ),
        Render {
            vars: BTreeMap::from([
                ("WHATSAPP_ACCESS_TOKEN".to_string(), token.to_string()),
                ("PORT".to_string(), "10000".to_string()),
            ]),
            ..Render::default()
        },
    )
    .await
}

fn var(fake: &Fake<Render>) -> Option<String> {
    fake.with(|d| d.vars.get("WHATSAPP_ACCESS_TOKEN").cloned())
}

fn statuses(fake: &Fake<Render>) -> Vec<String> {
    fake.with(|d| d.deploys.iter().map(|(_, s)| s.clone()).collect())
}

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("render-key");
    write_private(&p, API_KEY);
    p
}

fn target_toml(fake: &Fake<Render>, dir: &std::path::Path, wave: u32) -> String {
    format!(
        "[[token.target]]\nname = \"render-api\"\nkind = \"render_env_var\"\nwave = {wave}\nservice = \"{SERVICE}\"\ntimeout = \"60s\"\napi_url = \"{}/v1\"\napi_token = {{ file = \"{}\" }}\n",
        fake.url(),
        key_file(dir).display()
    )
}

fn cfg(
    fake: &Fake<Render>,
    dir: &std::path::Path,
    service: &str,
    deploy: bool,
    timeout: u64,
) -> tokenwarden::config::TargetConfig {
    target_config(
        "render-api",
        TargetKind::RenderEnvVar {
            service: service.into(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
            deploy,
            api: ApiAccess {
                url: format!("{}/v1", fake.url()).parse().unwrap(),
                token: SecretRef::File(key_file(dir)),
            },
        },
        Duration::from_secs(timeout),
    )
}

/// No token in a URL, a header or a read; the key only in `Authorization`.
fn assert_clean_requests(fake: &Fake<Render>, tokens: &[&str]) {
    for r in fake.requests() {
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .collect();
        let mut seen = format!("{} {} {headers:?}", r.method, r.uri);
        if r.method != "PUT" {
            seen.push_str(&r.body);
        }
        assert_no_leak(&seen, &[tokens, &[API_KEY]].concat(), "a request to Render");
    }
}

#[tokio::test]
async fn a_rotation_sets_the_var_deploys_until_live_and_reads_it_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_render(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let r = rotate_with(&sb, &old, &target_toml(&fake, dir.path(), 1), &[]).await;
    assert_eq!(r.dry.code, 0, "{:?}", r.dry);
    assert!(
        r.dry.stdout.contains(&format!("wave 1: render-api: target render-api (Render env var WHATSAPP_ACCESS_TOKEN of service {SERVICE}); holds the current token (read back with GET /services/{{service}}/env-vars/{{key}})")),
        "{:?}",
        r.dry
    );
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_ne!(r.current, old);
    assert_eq!(var(&fake), Some(r.current.clone()));
    assert_eq!(
        fake.with(|d| d.vars["PORT"].clone()),
        "10000",
        "other vars kept"
    );
    assert_eq!(
        statuses(&fake),
        vec!["live"],
        "deployed once, waited until live"
    );
    let puts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|q| q.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(
        puts[0].uri,
        format!("/v1/services/{SERVICE}/env-vars/WHATSAPP_ACCESS_TOKEN")
    );
    assert_clean_requests(&fake, &[&old, &r.current]);
    assert_no_leak(
        &format!("{}{}", r.dry.all(), r.run.all()),
        &[&old, &r.current, API_KEY],
        "output",
    );
}

#[tokio::test]
async fn a_failed_deploy_fails_the_target_and_the_old_token_is_deployed_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_render(&old).await;
    fake.with(|d| d.failing_deploys = 1);
    let dir = tempfile::tempdir().unwrap();
    let r = rotate_with(&sb, &old, &target_toml(&fake, dir.path(), 1), &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert!(r.run.stdout.contains("ended build_failed"), "{:?}", r.run);
    assert_eq!(r.current, old);
    assert_eq!(var(&fake), Some(old.clone()), "back on the old token");
    assert_eq!(
        statuses(&fake),
        vec!["build_failed", "live"],
        "the rollback deployed again"
    );
    assert_no_leak(&r.run.all(), &[&old, API_KEY], "output");
}

#[tokio::test]
async fn a_deploy_not_live_within_the_timeout_fails_naming_its_status_and_rolls_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_render(&old).await;
    fake.with(|d| d.stuck = true);
    let dir = tempfile::tempdir().unwrap();
    let targets =
        target_toml(&fake, dir.path(), 1).replace("timeout = \"60s\"", "timeout = \"4s\"");
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert!(
        r.run
            .stdout
            .contains("deploy dep-1 was not live within 4s: still build_in_progress"),
        "{:?}",
        r.run
    );
    assert_eq!(r.current, old);
    assert_eq!(var(&fake), Some(old.clone()), "back on the old token");
    assert_no_leak(&r.run.all(), &[&old, API_KEY], "output");
}

#[tokio::test]
async fn a_later_wave_failing_puts_the_old_token_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_render(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "{}[[token.target]]\nname = \"prod-worker\"\nkind = \"exec\"\nwave = 2\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
        target_toml(&fake, dir.path(), 1)
    );
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert_eq!(var(&fake), Some(old.clone()));
    assert_eq!(statuses(&fake), vec!["live", "live"]);
    let sent: Vec<String> = fake
        .requests()
        .iter()
        .filter(|q| q.method == "PUT")
        .map(|q| {
            serde_json::from_str::<serde_json::Value>(&q.body).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sent.len(), 2);
    assert_ne!(sent[0], old);
    assert_eq!(sent[1], old);
    assert_clean_requests(&fake, &[&old, &sent[0]]);
    assert_no_leak(&r.run.all(), &[&old, &sent[0], API_KEY], "output");
}

#[tokio::test]
async fn the_drift_check_repairs_a_var_changed_behind_its_back() {
    let current = Secret::new("EAAGcurrentrendertoken0001");
    let fake = fake_render(current.expose()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), SERVICE, false, 10)).await;
    let mut records = BTreeMap::new();
    let check =
        async |records: &mut BTreeMap<_, _>| crate::util::drift_check(&t, records, &current).await;
    let first = check(&mut records).await;
    assert!(
        first.synced.is_empty() && first.drifted.is_empty(),
        "{first:?}"
    );
    fake.with(|d| {
        d.vars.insert(
            "WHATSAPP_ACCESS_TOKEN".into(),
            "EAAGchangedinthedashboard".into(),
        )
    });
    let second = check(&mut records).await;
    assert_eq!(second.drifted.len(), 1, "{second:?}");
    assert_eq!(var(&fake).as_deref(), Some(current.expose()));
    assert!(statuses(&fake).is_empty(), "deploy = false deploys nothing");
    assert_clean_requests(&fake, &[current.expose()]);
}

#[tokio::test]
async fn refusals_name_the_access_conflicts_and_rate_limits_are_retried_a_hang_times_out() {
    let fake = fake_render("EAAGbeforefaultsrender0001").await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), SERVICE, true, 20)).await;
    let token = "EAAGafterfaultsrender00001";

    fake.fail_next(Fault::Status(
        403,
        r#"{"id":"forbidden","message":"forbidden"}"#.into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("403") && w.contains(&format!("workspace that owns service {SERVICE}"))),
        "{out:?}"
    );

    fake.fail_next(Fault::Status(
        401,
        r#"{"id":"unauthorized","message":"unauthorized"}"#.into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("401")),
        "{out:?}"
    );

    // A refusal that quotes the request back (the value and the key): scrubbed.
    fake.fail_next(Fault::Pass);
    fake.fail_next(Fault::Status(
        400,
        format!(r#"{{"id":"400","message":"invalid value {token} (key {API_KEY})"}}"#),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    let Err(TargetError::Refused(why)) = out else {
        panic!("{out:?}")
    };
    assert!(why.contains("400") && why.contains("[redacted]"), "{why}");
    assert_no_leak(&why, &[token, API_KEY], "a platform's error");

    let missing = open_target(&cfg(&fake, dir.path(), "srv-missing", true, 10)).await;
    let (out, _) = push_timed(&missing, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("404") && w.contains("no such service")),
        "{out:?}"
    );

    fake.fail_next(Fault::Status(
        429,
        r#"{"id":"429","message":"rate limit exceeded"}"#.into(),
        Some(1),
    ));
    fake.fail_next(Fault::Status(
        409,
        r#"{"id":"409","message":"a deploy is already in progress"}"#.into(),
        None,
    ));
    let (out, took) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert_eq!(var(&fake).as_deref(), Some(token));
    assert_eq!(statuses(&fake), vec!["live"]);

    for _ in 0..4 {
        fake.fail_next(Fault::Hang);
    }
    let slow = open_target(&cfg(&fake, dir.path(), SERVICE, true, 2)).await;
    let (out, took) = push_timed(&slow, "EAAGneverarrivesrender0001").await;
    assert!(matches!(out, Err(TargetError::Transient(_))), "{out:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(var(&fake).as_deref(), Some(token));
    assert_clean_requests(&fake, &[token]);
}
