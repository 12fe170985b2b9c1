//! The `github_actions_secret` target against a loopback GitHub that checks what the REST
//! reference requires (bearer token, `Accept`, `X-GitHub-Api-Version`, the public-key then PUT
//! sequence with its `key_id`) and opens each sealed secret with PyNaCl, an independent
//! libsodium: a rotation delivers the new token (repository, environment and organisation
//! secrets), a later wave failing puts the old one back, a failed push is retried by the drift
//! check, 401/403 name the permission, 409/429 are retried, a hang times out, and no token or
//! API credential is anywhere it should not be.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenwarden::config::{ApiAccess, GithubScope, SecretRef, TargetKind};
use tokenwarden::secret::Secret;
use tokenwarden::target::{PushEvent, TargetError};

use crate::util::{
    Fake, FakeState, Fault, assert_no_leak, due_token, open_target, push_ctx, push_timed,
    rotate_with, sandbox, support_script, target_config, write_private,
};

const API_TOKEN: &str = "github_pat_11CANARYapitoken0000";

/// What the fake GitHub holds: its key pair (PyNaCl's), and each secret's path with the value
/// its sealed box opened to.
#[derive(Debug, Default)]
struct GitHub {
    secret_key: String,
    public_key: String,
    key_id: String,
    /// `(path of the secret, opened value, visibility)`, every PUT in order.
    puts: Vec<(String, String, Option<String>)>,
}

fn keypair() -> (String, String) {
    let out = support_script("sealed_box.py")
        .arg("keypair")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
    )
}

/// Opens `sealed` (base64) with PyNaCl; `None` when it does not open.
fn open_sealed(secret_key: &str, sealed: &str) -> Option<String> {
    use std::io::Write;
    let mut child = support_script("sealed_box.py")
        .arg("open")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret_key}\n{sealed}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

fn gh_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest/actions/secrets",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

async fn github(
    State(s): State<FakeState<GitHub>>,
    method: Method,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if h("authorization") != format!("Bearer {API_TOKEN}") {
        return gh_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if h("accept") != "application/vnd.github+json"
        || h("x-github-api-version") != "2022-11-28"
        || h("user-agent").is_empty()
    {
        return gh_error(
            StatusCode::BAD_REQUEST,
            "missing Accept, API version or User-Agent",
        );
    }
    let parts: Vec<&str> = path.split('/').collect();
    // repos/{o}/{r}/actions/secrets/..., repos/{o}/{r}/environments/{e}/secrets/...,
    // orgs/{org}/actions/secrets/...
    let base_len = match parts.as_slice() {
        ["repos", _, _, "actions", "secrets", ..] => 5,
        ["repos", _, _, "environments", _, "secrets", ..] => 6,
        ["orgs", _, "actions", "secrets", ..] => 4,
        _ => return gh_error(StatusCode::NOT_FOUND, "Not Found"),
    };
    if parts.iter().any(|p| p.contains("missing")) {
        return gh_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let rest = &parts[base_len..];
    match (method.as_str(), rest) {
        ("GET", ["public-key"]) => {
            let g = s.lock().unwrap();
            axum::Json(serde_json::json!({"key_id": g.data.key_id, "key": g.data.public_key}))
                .into_response()
        }
        ("PUT", [name]) => {
            let req: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return gh_error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
            };
            let (sk, key_id) = {
                let g = s.lock().unwrap();
                (g.data.secret_key.clone(), g.data.key_id.clone())
            };
            if req["key_id"] != key_id.as_str() {
                return gh_error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid key_id");
            }
            let is_org = parts[0] == "orgs";
            let visibility = req["visibility"].as_str().map(str::to_string);
            if is_org != visibility.is_some() {
                return gh_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "visibility is required for an organization secret",
                );
            }
            let sealed = req["encrypted_value"].as_str().unwrap_or("").to_string();
            let opened = tokio::task::spawn_blocking(move || open_sealed(&sk, &sealed))
                .await
                .unwrap();
            let Some(value) = opened else {
                return gh_error(StatusCode::UNPROCESSABLE_ENTITY, "Bad encrypted_value");
            };
            let mut g = s.lock().unwrap();
            let key = format!("{}/{name}", parts[..base_len].join("/"));
            let existed = g.data.puts.iter().any(|(k, _, _)| *k == key);
            g.data.puts.push((key, value, visibility));
            if existed {
                StatusCode::NO_CONTENT.into_response()
            } else {
                (StatusCode::CREATED, axum::Json(serde_json::json!({}))).into_response()
            }
        }
        _ => gh_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn fake_github() -> Fake<GitHub> {
    let (secret_key, public_key) = keypair();
    Fake::start(
        axum::Router::new().route("/{*path}", axum::routing::any(github)),
        GitHub {
            secret_key,
            public_key,
            key_id: "568250167242549743".into(),
            puts: Vec::new(),
        },
    )
    .await
}

/// The values the fake's secret at `key` was set to, in order.
fn values(fake: &Fake<GitHub>, key: &str) -> Vec<String> {
    fake.with(|d| {
        d.puts
            .iter()
            .filter(|(k, _, _)| k == key)
            .map(|(_, v, _)| v.clone())
            .collect()
    })
}

fn token_file(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("github-token");
    write_private(&p, API_TOKEN);
    p
}

/// No token and no API credential in a request, except the credential in `Authorization`.
fn assert_clean_requests(fake: &Fake<GitHub>, tokens: &[&str]) {
    for r in fake.requests() {
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .collect();
        let seen = format!("{} {} {headers:?} {}", r.method, r.uri, r.body);
        let mut all = tokens.to_vec();
        all.push(API_TOKEN);
        assert_no_leak(&seen, &all, "a request to GitHub");
    }
}

#[tokio::test]
async fn a_rotation_seals_the_token_that_pynacl_opens_and_the_dry_run_says_write_only() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_github().await;
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "[[token.target]]\nname = \"gh-deploy\"\nkind = \"github_actions_secret\"\nwave = 1\nrepository = \"billbytekot/backend\"\nkey = \"WHATSAPP_TOKEN\"\napi_url = \"{}\"\napi_token = {{ file = \"{}\" }}\n",
        fake.url(),
        token_file(dir.path()).display()
    );
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.dry.code, 0, "{:?}", r.dry);
    assert!(
        r.dry.stdout.contains("wave 1: gh-deploy: target gh-deploy (GitHub Actions secret WHATSAPP_TOKEN of repository billbytekot/backend); cannot be read back (write-only: GitHub never returns a secret's value; verified by its verify_url or verify_command only)"),
        "{:?}",
        r.dry
    );
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_ne!(r.current, old);
    assert_eq!(
        values(
            &fake,
            "repos/billbytekot/backend/actions/secrets/WHATSAPP_TOKEN"
        ),
        vec![r.current.clone()],
        "PyNaCl opened the new token"
    );
    let methods: Vec<String> = fake
        .requests()
        .iter()
        .map(|q| format!("{} {}", q.method, q.uri))
        .collect();
    assert_eq!(
        methods,
        vec![
            "GET /repos/billbytekot/backend/actions/secrets/public-key",
            "PUT /repos/billbytekot/backend/actions/secrets/WHATSAPP_TOKEN"
        ]
    );
    assert_clean_requests(&fake, &[&old, &r.current]);
    assert_no_leak(
        &format!("{}{}", r.dry.all(), r.run.all()),
        &[&old, &r.current, API_TOKEN],
        "output",
    );
}

#[tokio::test]
async fn environment_and_organisation_secrets_take_their_paths_and_visibility() {
    let fake = fake_github().await;
    let dir = tempfile::tempdir().unwrap();
    let api = ApiAccess {
        url: fake.url().parse().unwrap(),
        token: SecretRef::File(token_file(dir.path())),
    };
    let token = "EAAGenvironmentandorgtoken01";
    for (scope, key, visibility) in [
        (
            GithubScope::Environment {
                owner: "billbytekot".into(),
                repo: "backend".into(),
                environment: "production".into(),
            },
            "repos/billbytekot/backend/environments/production/secrets/WA_TOKEN",
            None,
        ),
        (
            GithubScope::Organization {
                org: "billbytekot".into(),
                visibility: "private".into(),
            },
            "orgs/billbytekot/actions/secrets/WA_TOKEN",
            Some("private".to_string()),
        ),
    ] {
        let t = open_target(&target_config(
            "gh",
            TargetKind::GithubActionsSecret {
                scope,
                name: "WA_TOKEN".into(),
                api: api.clone(),
            },
            Duration::from_secs(10),
        ))
        .await;
        let (out, _) = push_timed(&t, token).await;
        assert_eq!(out, Ok(true), "{key}");
        assert_eq!(values(&fake, key), vec![token.to_string()]);
        let got = fake.with(|d| d.puts.last().unwrap().2.clone());
        assert_eq!(got, visibility, "{key}");
    }
    assert_clean_requests(&fake, &[token]);
}

#[tokio::test]
async fn a_later_wave_failing_seals_the_old_token_again() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_github().await;
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "[[token.target]]\nname = \"gh-deploy\"\nkind = \"github_actions_secret\"\nwave = 1\nrepository = \"billbytekot/backend\"\napi_url = \"{}\"\napi_token = {{ file = \"{}\" }}\n[[token.target]]\nname = \"prod-worker\"\nkind = \"exec\"\nwave = 2\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
        fake.url(),
        token_file(dir.path()).display()
    );
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert_eq!(r.current, old);
    let v = values(
        &fake,
        "repos/billbytekot/backend/actions/secrets/WHATSAPP_ACCESS_TOKEN",
    );
    assert_eq!(v.len(), 2, "the candidate, then the old token back");
    assert_ne!(v[0], old);
    assert_eq!(v[1], old);
    assert_clean_requests(&fake, &[&old, &v[0]]);
    assert_no_leak(&r.run.all(), &[&old, &v[0], API_TOKEN], "output");
}

#[tokio::test]
async fn a_failed_push_is_retried_by_the_drift_check_which_cannot_read_github() {
    let fake = fake_github().await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&target_config(
        "gh",
        TargetKind::GithubActionsSecret {
            scope: GithubScope::Repository {
                owner: "billbytekot".into(),
                repo: "backend".into(),
            },
            name: "WA".into(),
            api: ApiAccess {
                url: fake.url().parse().unwrap(),
                token: SecretRef::File(token_file(dir.path())),
            },
        },
        Duration::from_secs(10),
    ))
    .await;
    assert!(!t.readable());
    assert_eq!(t.read_back().await, Ok(None));
    let current = Secret::new("EAAGcurrenttokenfordrift01");
    let mut records = std::collections::BTreeMap::new();
    records.insert(
        "gh".to_string(),
        tokenwarden::delivery::TargetRecord {
            kind: "github_actions_secret".into(),
            ok: false,
            error: Some("GitHub PUT: answered 502".into()),
            ..Default::default()
        },
    );
    let out = tokenwarden::delivery::reconcile(
        std::slice::from_ref(&t),
        &mut records,
        &current,
        &push_ctx(PushEvent::Sync),
        &tokenwarden::target::http_client(),
        1,
    )
    .await;
    assert_eq!(out.synced, vec!["gh".to_string()], "{out:?}");
    assert_eq!(
        values(&fake, "repos/billbytekot/backend/actions/secrets/WA"),
        vec![current.expose().to_string()]
    );
    // Now delivered: the next check leaves it alone (it cannot see a change on GitHub).
    let again = tokenwarden::delivery::reconcile(
        std::slice::from_ref(&t),
        &mut records,
        &current,
        &push_ctx(PushEvent::Sync),
        &tokenwarden::target::http_client(),
        1,
    )
    .await;
    assert!(
        again.synced.is_empty() && again.drifted.is_empty(),
        "{again:?}"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn refusals_name_the_permission_conflicts_and_rate_limits_are_retried_a_hang_times_out() {
    let fake = fake_github().await;
    let dir = tempfile::tempdir().unwrap();
    let open = |repo: &str, timeout: u64| {
        target_config(
            "gh",
            TargetKind::GithubActionsSecret {
                scope: GithubScope::Repository {
                    owner: "billbytekot".into(),
                    repo: repo.into(),
                },
                name: "WA".into(),
                api: ApiAccess {
                    url: fake.url().parse().unwrap(),
                    token: SecretRef::File(token_file(dir.path())),
                },
            },
            Duration::from_secs(timeout),
        )
    };
    let t = open_target(&open("backend", 10)).await;
    let token = "EAAGfaultsweretriedtoken01";

    fake.fail_next(Fault::Status(
        403,
        r#"{"message":"Resource not accessible by personal access token","documentation_url":"https://docs.github.com/rest/actions/secrets#get-a-repository-public-key","status":"403"}"#.into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    let Err(TargetError::Refused(why)) = out else {
        panic!("{out:?}")
    };
    assert!(why.contains("403"), "{why}");
    assert!(why.contains("Resource not accessible"), "{why}");
    assert!(
        why.contains("\"Secrets\" repository permission (write) on billbytekot/backend"),
        "{why}"
    );

    fake.fail_next(Fault::Status(
        401,
        r#"{"message":"Bad credentials"}"#.into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("401") && w.contains("Bad credentials")),
        "{out:?}"
    );

    let missing = open_target(&open("missing-repo", 10)).await;
    let (out, _) = push_timed(&missing, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("404") && w.contains("may not see it")),
        "{out:?}"
    );

    let before = fake.requests().len();
    fake.fail_next(Fault::Status(
        429,
        r#"{"message":"API rate limit exceeded"}"#.into(),
        Some(1),
    ));
    fake.fail_next(Fault::Status(409, r#"{"message":"Conflict"}"#.into(), None));
    let (out, took) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After honoured: {took:?}"
    );
    assert_eq!(fake.requests().len() - before, 4, "429, 409, key, PUT");
    assert_eq!(
        values(&fake, "repos/billbytekot/backend/actions/secrets/WA"),
        vec![token.to_string()]
    );

    for _ in 0..4 {
        fake.fail_next(Fault::Hang);
    }
    let slow = open_target(&open("backend", 2)).await;
    let (out, took) = push_timed(&slow, token).await;
    assert!(matches!(out, Err(TargetError::Transient(_))), "{out:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_clean_requests(&fake, &[token]);
}
