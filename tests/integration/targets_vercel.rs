//! The `vercel_env` target against a loopback Vercel REST API that checks what the reference
//! requires (bearer token, `teamId` for a team's project, values listed encrypted and decrypted
//! one by one, `PATCH /v9/projects/{p}/env/{id}` to edit an entry, `POST /v10/projects/{p}/env`
//! with `upsert=true` and `{key, value, type, target}` to create one, `{"error": {"code",
//! "message"}}` errors, the redeploy's `deploymentId`): a rotation edits and reads back every
//! chosen environment and redeploys production, a later wave failing puts the old token back,
//! the drift check repairs an environment changed, made sensitive or deleted, 403/404 say what
//! to fix, 409/429 are retried, a hang times out, no token leaks.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenwarden::config::{ApiAccess, SecretRef, TargetKind};
use tokenwarden::secret::Secret;
use tokenwarden::target::TargetError;

use crate::util::{
    Fake, FakeState, Fault, assert_no_leak, due_token, open_target, push_timed, rotate_with,
    sandbox, target_config, write_private,
};

const API_TOKEN: &str = "vercel_CANARYapitoken_0000111";
const PROJECT: &str = "billbytekot-web";
const TEAM: &str = "team_bbk0001";

#[derive(Debug, Clone)]
struct Env {
    id: String,
    key: String,
    value: String,
    kind: String,
    target: Vec<String>,
}

#[derive(Debug, Default)]
struct Vercel {
    envs: Vec<Env>,
    next_id: u32,
    /// The `deploymentId` of each redeploy.
    redeploys: Vec<String>,
}

fn vercel_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The checks every endpoint makes: the token, then the team of the project.
fn gate(headers: &HeaderMap, q: &BTreeMap<String, String>, project: &str) -> Option<Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {API_TOKEN}") {
        return Some(vercel_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not authorized",
        ));
    }
    if project != PROJECT || q.get("teamId").map(String::as_str) != Some(TEAM) {
        return Some(vercel_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Project not found",
        ));
    }
    None
}

async fn list_or_upsert(
    State(s): State<FakeState<Vercel>>,
    Path(project): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    method: axum::http::Method,
    body: Bytes,
) -> Response {
    if let Some(r) = gate(&headers, &q, &project) {
        return r;
    }
    let mut g = s.lock().unwrap();
    if method == axum::http::Method::GET {
        let envs: Vec<_> = g
            .data
            .envs
            .iter()
            .map(|e| serde_json::json!({"id": e.id, "key": e.key, "type": e.kind, "target": e.target, "value": "eyJ2IjoiZW5jcnlwdGVkIn0", "decrypted": false}))
            .collect();
        return axum::Json(serde_json::json!({"envs": envs})).into_response();
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(key), Some(value), Some(target)) = (
        req["key"].as_str(),
        req["value"].as_str(),
        req["target"].as_array(),
    ) else {
        return vercel_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Invalid request: missing key, value or target",
        );
    };
    if req["type"] != "encrypted" {
        return vercel_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected type encrypted",
        );
    }
    let target: Vec<String> = target
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let upsert = q.get("upsert").map(String::as_str) == Some("true");
    let existing = g
        .data
        .envs
        .iter_mut()
        .find(|e| e.key == key && e.target == target);
    let created = match existing {
        Some(_) if !upsert => {
            return vercel_error(
                StatusCode::BAD_REQUEST,
                "ENV_ALREADY_EXISTS",
                "A variable with the name already exists for the target",
            );
        }
        Some(e) => {
            e.value = value.to_string();
            e.kind = "encrypted".into();
            e.id.clone()
        }
        None => {
            g.data.next_id += 1;
            let id = format!("env_{}", g.data.next_id);
            g.data.envs.push(Env {
                id: id.clone(),
                key: key.into(),
                value: value.into(),
                kind: "encrypted".into(),
                target: target.clone(),
            });
            id
        }
    };
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"created": {"id": created, "key": key, "target": target, "type": "encrypted"}, "failed": []})),
    )
        .into_response()
}

async fn one(
    State(s): State<FakeState<Vercel>>,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&headers, &q, &project) {
        return r;
    }
    let g = s.lock().unwrap();
    match g.data.envs.iter().find(|e| e.id == id) {
        Some(e) if e.kind == "sensitive" => axum::Json(serde_json::json!({"decrypted": false, "id": e.id, "key": e.key, "type": "sensitive", "target": e.target})).into_response(),
        Some(e) => axum::Json(serde_json::json!({"decrypted": true, "id": e.id, "key": e.key, "type": e.kind, "target": e.target, "value": e.value})).into_response(),
        None => vercel_error(StatusCode::NOT_FOUND, "not_found", "Environment variable not found"),
    }
}

async fn edit(
    State(s): State<FakeState<Vercel>>,
    Path((project, id)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = gate(&headers, &q, &project) {
        return r;
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut g = s.lock().unwrap();
    let Some(e) = g.data.envs.iter_mut().find(|e| e.id == id) else {
        return vercel_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Environment variable not found",
        );
    };
    if let Some(v) = req["value"].as_str() {
        e.value = v.to_string();
    }
    if let Some(t) = req["type"].as_str() {
        e.kind = t.to_string();
    }
    axum::Json(serde_json::json!({"id": e.id, "key": e.key, "type": e.kind, "target": e.target}))
        .into_response()
}

async fn deployments(
    State(s): State<FakeState<Vercel>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    method: axum::http::Method,
    body: Bytes,
) -> Response {
    let project = q
        .get("projectId")
        .cloned()
        .unwrap_or_else(|| PROJECT.into());
    if let Some(r) = gate(&headers, &q, &project) {
        return r;
    }
    if method == axum::http::Method::GET {
        assert_eq!(q.get("target").map(String::as_str), Some("production"));
        return axum::Json(serde_json::json!({"deployments": [{"uid": "dpl_prev0001", "name": PROJECT, "target": "production", "state": "READY"}]})).into_response();
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if req["name"] != PROJECT || req["target"] != "production" {
        return vercel_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected name and target",
        );
    }
    let Some(id) = req["deploymentId"].as_str() else {
        return vercel_error(StatusCode::BAD_REQUEST, "bad_request", "no deploymentId");
    };
    s.lock().unwrap().data.redeploys.push(id.to_string());
    axum::Json(serde_json::json!({"id": "dpl_new0001", "readyState": "QUEUED"})).into_response()
}

async fn fake_vercel(token: &str) -> Fake<Vercel> {
    let envs = ["production", "preview"]
        .iter()
        .enumerate()
        .map(|(i, t)| Env {
            id: format!("env_seed{i}"),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
            value: token.into(),
            kind: "encrypted".into(),
            target: vec![t.to_string()],
        })
        .collect();
    Fake::start(
        axum::Router::new()
            .route(
                "/v10/projects/{project}/env",
                axum::routing::get(list_or_upsert).post(list_or_upsert),
            )
            .route("/v1/projects/{project}/env/{id}", axum::routing::get(one))
            .route(
                "/v9/projects/{project}/env/{id}",
                axum::routing::patch(edit),
            )
            .route("/v6/deployments", axum::routing::get(deployments))
            .route("/v13/deployments", axum::routing::post(deployments)),
        Vercel {
            envs,
            next_id: 0,
            redeploys: Vec::new(),
        },
    )
    .await
}

fn value_for(fake: &Fake<Vercel>, env: &str) -> Vec<String> {
    fake.with(|d| {
        d.envs
            .iter()
            .filter(|e| e.key == "WHATSAPP_ACCESS_TOKEN" && e.target.iter().any(|t| t == env))
            .map(|e| e.value.clone())
            .collect()
    })
}

fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("vercel-token");
    write_private(&p, API_TOKEN);
    p
}

fn target_toml(fake: &Fake<Vercel>, dir: &std::path::Path, wave: u32) -> String {
    format!(
        "[[token.target]]\nname = \"vercel-web\"\nkind = \"vercel_env\"\nwave = {wave}\nproject = \"{PROJECT}\"\nteam_id = \"{TEAM}\"\nenvironments = [\"production\", \"preview\"]\nredeploy = true\napi_url = \"{}\"\napi_token = {{ file = \"{}\" }}\n",
        fake.url(),
        token_file(dir).display()
    )
}

fn cfg(
    fake: &Fake<Vercel>,
    dir: &std::path::Path,
    team: &str,
    timeout: u64,
) -> tokenwarden::config::TargetConfig {
    target_config(
        "vercel-web",
        TargetKind::VercelEnv {
            project: PROJECT.into(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
            environments: vec!["production".into(), "preview".into()],
            team_id: Some(team.into()),
            redeploy: false,
            api: ApiAccess {
                url: fake.url().parse().unwrap(),
                token: SecretRef::File(token_file(dir)),
            },
        },
        Duration::from_secs(timeout),
    )
}

/// No token in a URL, a header or a read; the credential only in `Authorization`.
fn assert_clean_requests(fake: &Fake<Vercel>, tokens: &[&str]) {
    for r in fake.requests() {
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .collect();
        let mut seen = format!("{} {} {headers:?}", r.method, r.uri);
        if !(r.method == "PATCH" || (r.method == "POST" && r.uri.contains("/env"))) {
            seen.push_str(&r.body);
        }
        assert_no_leak(
            &seen,
            &[tokens, &[API_TOKEN]].concat(),
            "a request to Vercel",
        );
    }
}

#[tokio::test]
async fn a_rotation_edits_every_environment_reads_them_back_and_redeploys() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_vercel(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let r = rotate_with(&sb, &old, &target_toml(&fake, dir.path(), 1), &[]).await;
    assert_eq!(r.dry.code, 0, "{:?}", r.dry);
    assert!(
        r.dry.stdout.contains(&format!("wave 1: vercel-web: target vercel-web (Vercel env WHATSAPP_ACCESS_TOKEN of project {PROJECT} (production, preview)); holds the current token (read back decrypted")),
        "{:?}",
        r.dry
    );
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_ne!(r.current, old);
    for env in ["production", "preview"] {
        assert_eq!(value_for(&fake, env), vec![r.current.clone()], "{env}");
    }
    assert_eq!(
        fake.with(|d| d.redeploys.clone()),
        vec!["dpl_prev0001".to_string()]
    );
    // Each environment's entry edited by id, nothing created beside them.
    let edits: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|q| q.method == "PATCH")
        .map(|q| q.uri)
        .collect();
    assert_eq!(
        edits,
        vec![
            format!("/v9/projects/{PROJECT}/env/env_seed0?teamId={TEAM}"),
            format!("/v9/projects/{PROJECT}/env/env_seed1?teamId={TEAM}")
        ]
    );
    assert_eq!(fake.with(|d| d.envs.len()), 2);
    assert_clean_requests(&fake, &[&old, &r.current]);
    assert_no_leak(
        &format!("{}{}", r.dry.all(), r.run.all()),
        &[&old, &r.current, API_TOKEN],
        "output",
    );
}

#[tokio::test]
async fn a_later_wave_failing_puts_the_old_token_back_and_redeploys_again() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_vercel(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "{}[[token.target]]\nname = \"prod-worker\"\nkind = \"exec\"\nwave = 2\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
        target_toml(&fake, dir.path(), 1)
    );
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert_eq!(r.current, old);
    for env in ["production", "preview"] {
        assert_eq!(value_for(&fake, env), vec![old.clone()], "{env}");
    }
    assert_eq!(
        fake.with(|d| d.redeploys.len()),
        2,
        "the candidate, then the old token"
    );
    let sent: Vec<String> = fake
        .requests()
        .iter()
        .filter(|q| q.method == "PATCH")
        .map(|q| {
            serde_json::from_str::<serde_json::Value>(&q.body).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sent.len(), 4, "two environments, twice");
    assert_ne!(sent[0], old);
    assert_eq!(
        (sent[2].as_str(), sent[3].as_str()),
        (old.as_str(), old.as_str())
    );
    assert_clean_requests(&fake, &[&old, &sent[0]]);
    assert_no_leak(&r.run.all(), &[&old, &sent[0], API_TOKEN], "output");
}

#[tokio::test]
async fn the_drift_check_repairs_an_environment_changed_or_made_sensitive() {
    let current = Secret::new("EAAGcurrentverceltoken0001");
    let fake = fake_vercel(current.expose()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), TEAM, 10)).await;
    let mut records = BTreeMap::new();
    let check =
        async |records: &mut BTreeMap<_, _>| crate::util::drift_check(&t, records, &current).await;
    let first = check(&mut records).await;
    assert!(
        first.synced.is_empty() && first.drifted.is_empty(),
        "{first:?}"
    );
    // Preview changed in the dashboard: drift, repaired (production untouched).
    fake.with(|d| d.envs[1].value = "EAAGpreviewchangedbyhand".into());
    let second = check(&mut records).await;
    assert_eq!(second.drifted.len(), 1, "{second:?}");
    assert_eq!(
        value_for(&fake, "preview"),
        vec![current.expose().to_string()]
    );
    // Made sensitive (unreadable): read as not holding the token, written again as encrypted.
    fake.with(|d| d.envs[0].kind = "sensitive".into());
    let third = check(&mut records).await;
    assert_eq!(third.drifted.len(), 1, "{third:?}");
    assert_eq!(fake.with(|d| d.envs[0].kind.clone()), "encrypted");
    // Preview's entry deleted: created again (upsert), for preview only.
    fake.with(|d| d.envs.remove(1));
    let fourth = check(&mut records).await;
    assert_eq!(fourth.drifted.len(), 1, "{fourth:?}");
    assert_eq!(
        value_for(&fake, "preview"),
        vec![current.expose().to_string()]
    );
    let created = fake.with(|d| d.envs.last().unwrap().target.clone());
    assert_eq!(created, vec!["preview".to_string()]);
    let post = fake
        .requests()
        .into_iter()
        .find(|q| q.method == "POST")
        .unwrap();
    assert!(
        post.uri.contains("upsert=true") && post.uri.contains(&format!("teamId={TEAM}")),
        "{}",
        post.uri
    );
    assert_clean_requests(&fake, &[current.expose()]);
}

#[tokio::test]
async fn refusals_say_what_to_fix_conflicts_and_rate_limits_are_retried_a_hang_times_out() {
    let fake = fake_vercel("EAAGbeforefaultsvercel0001").await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), TEAM, 10)).await;
    let token = "EAAGafterfaultsvercel00001";

    fake.fail_next(Fault::Status(
        403,
        r#"{"error":{"code":"forbidden","message":"Not authorized"}}"#.into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("403") && w.contains("(code forbidden)") && w.contains("scoped to the team that owns project")),
        "{out:?}"
    );

    let other_team = open_target(&cfg(&fake, dir.path(), "team_other", 10)).await;
    let (out, _) = push_timed(&other_team, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("404") && w.contains("no such project in that team")),
        "{out:?}"
    );

    let before = fake.requests().len();
    fake.fail_next(Fault::Status(
        429,
        r#"{"error":{"code":"rate_limited","message":"Rate limit exceeded"}}"#.into(),
        Some(1),
    ));
    fake.fail_next(Fault::Status(
        409,
        r#"{"error":{"code":"conflict","message":"Conflicting update"}}"#.into(),
        None,
    ));
    let (out, took) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    // 429, 409, list + 2 reads, 2 edits, list + 2 reads back.
    assert_eq!(fake.requests().len() - before, 10);
    assert_eq!(value_for(&fake, "production"), vec![token.to_string()]);

    for _ in 0..4 {
        fake.fail_next(Fault::Hang);
    }
    let slow = open_target(&cfg(&fake, dir.path(), TEAM, 2)).await;
    let (out, took) = push_timed(&slow, "EAAGneverarrivesvercel0001").await;
    assert!(matches!(out, Err(TargetError::Transient(_))), "{out:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_clean_requests(&fake, &[token]);
}
