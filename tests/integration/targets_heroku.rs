//! The `heroku_config_var` target against a loopback Heroku Platform API that checks what the
//! reference requires (bearer token, `Accept: application/vnd.heroku+json; version=3`, `PATCH`
//! of a JSON object of strings that leaves other vars alone, `{"id", "message"}` errors): a
//! rotation sets and reads back the var, a later wave failing puts the old token back, the
//! drift check repairs a var changed behind its back (and restarts nothing when it holds the
//! token), 401/403/404 are refused with what to fix, 429/503 are retried, a hang times out, and
//! no token or API credential is where it should not be.

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

const API_TOKEN: &str = "HRKU-CANARYapitoken-0000-1111";
const APP: &str = "billbytekot-backend";

/// The apps Heroku holds: their config vars, and how many releases (dyno restarts) each had.
#[derive(Debug, Default)]
struct Heroku {
    vars: BTreeMap<String, BTreeMap<String, String>>,
    releases: u32,
}

fn heroku_error(status: StatusCode, id: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"id": id, "message": message})),
    )
        .into_response()
}

async fn config_vars(
    State(s): State<FakeState<Heroku>>,
    method: Method,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if h("authorization") != format!("Bearer {API_TOKEN}") {
        return heroku_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials provided.",
        );
    }
    if h("accept") != "application/vnd.heroku+json; version=3" {
        return heroku_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Please specify a version along with Heroku's API MIME type.",
        );
    }
    let mut g = s.lock().unwrap();
    let Some(vars) = g.data.vars.get_mut(&app) else {
        return heroku_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Couldn't find that app.",
        );
    };
    if method == Method::PATCH {
        if h("content-type") != "application/json" {
            return heroku_error(StatusCode::BAD_REQUEST, "bad_request", "expected JSON");
        }
        let Ok(serde_json::Value::Object(set)) = serde_json::from_slice(&body) else {
            return heroku_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_params",
                "Invalid params.",
            );
        };
        for (k, v) in set {
            match v {
                serde_json::Value::String(v) => {
                    vars.insert(k, v);
                }
                serde_json::Value::Null => {
                    vars.remove(&k);
                }
                _ => {
                    return heroku_error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_params",
                        "Config var values must be strings.",
                    );
                }
            }
        }
        let out = axum::Json(vars.clone()).into_response();
        g.data.releases += 1;
        return out;
    }
    axum::Json(vars.clone()).into_response()
}

async fn fake_heroku(token: &str) -> Fake<Heroku> {
    let mut vars = BTreeMap::new();
    vars.insert(
        APP.to_string(),
        BTreeMap::from([
            ("DATABASE_URL".to_string(), "postgres://db/bill".to_string()),
            ("WHATSAPP_ACCESS_TOKEN".to_string(), token.to_string()),
        ]),
    );
    Fake::start(
        axum::Router::new().route(
            "/apps/{app}/config-vars",
            axum::routing::get(config_vars).patch(config_vars),
        ),
        Heroku { vars, releases: 0 },
    )
    .await
}

fn var(fake: &Fake<Heroku>) -> Option<String> {
    fake.with(|d| d.vars[APP].get("WHATSAPP_ACCESS_TOKEN").cloned())
}

fn target_toml(fake: &Fake<Heroku>, token_file: &std::path::Path, wave: u32) -> String {
    format!(
        "[[token.target]]\nname = \"heroku-prod\"\nkind = \"heroku_config_var\"\nwave = {wave}\napp = \"{APP}\"\napi_url = \"{}\"\napi_token = {{ file = \"{}\" }}\n",
        fake.url(),
        token_file.display()
    )
}

fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("heroku-token");
    write_private(&p, API_TOKEN);
    p
}

/// No token in a URL, a header or a read; the credential only in `Authorization`.
fn assert_clean_requests(fake: &Fake<Heroku>, tokens: &[&str]) {
    for r in fake.requests() {
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .collect();
        let mut seen = format!("{} {} {headers:?}", r.method, r.uri);
        if r.method != "PATCH" {
            seen.push_str(&r.body);
        }
        assert_no_leak(
            &seen,
            &[tokens, &[API_TOKEN]].concat(),
            "a request to Heroku",
        );
    }
}

fn open_cfg(
    fake: &Fake<Heroku>,
    dir: &std::path::Path,
    app: &str,
    timeout: u64,
) -> tokenwarden::config::TargetConfig {
    target_config(
        "heroku-prod",
        TargetKind::HerokuConfigVar {
            app: app.into(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
            api: ApiAccess {
                url: fake.url().parse().unwrap(),
                token: SecretRef::File(token_file(dir)),
            },
        },
        Duration::from_secs(timeout),
    )
}

#[tokio::test]
async fn a_rotation_sets_the_config_var_and_reads_it_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_heroku(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let r = rotate_with(
        &sb,
        &old,
        &target_toml(&fake, &token_file(dir.path()), 1),
        &[],
    )
    .await;
    assert_eq!(r.dry.code, 0, "{:?}", r.dry);
    assert!(
        r.dry.stdout.contains(&format!("wave 1: heroku-prod: target heroku-prod (Heroku config var WHATSAPP_ACCESS_TOKEN of app {APP}); holds the current token (read back with GET /apps/{{app}}/config-vars)")),
        "{:?}",
        r.dry
    );
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_ne!(r.current, old);
    assert_eq!(var(&fake), Some(r.current.clone()));
    assert_eq!(
        fake.with(|d| d.vars[APP]["DATABASE_URL"].clone()),
        "postgres://db/bill",
        "other vars kept"
    );
    assert_eq!(fake.with(|d| d.releases), 1, "one restart");
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|q| q.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].uri, format!("/apps/{APP}/config-vars"));
    let body: serde_json::Value = serde_json::from_str(&patches[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"WHATSAPP_ACCESS_TOKEN": r.current}),
        "only the one var"
    );
    assert_clean_requests(&fake, &[&old, &r.current]);
    assert_no_leak(
        &format!("{}{}", r.dry.all(), r.run.all()),
        &[&old, &r.current, API_TOKEN],
        "output",
    );
}

#[tokio::test]
async fn a_later_wave_failing_puts_the_old_token_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_heroku(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "{}[[token.target]]\nname = \"prod-worker\"\nkind = \"exec\"\nwave = 2\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
        target_toml(&fake, &token_file(dir.path()), 1)
    );
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert_eq!(r.current, old);
    assert_eq!(var(&fake), Some(old.clone()), "back on the old token");
    let sets: Vec<String> = fake
        .requests()
        .iter()
        .filter(|q| q.method == "PATCH")
        .map(|q| {
            serde_json::from_str::<serde_json::Value>(&q.body).unwrap()["WHATSAPP_ACCESS_TOKEN"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sets.len(), 2, "the candidate, then the old token");
    assert_ne!(sets[0], old);
    assert_eq!(sets[1], old);
    assert_clean_requests(&fake, &[&old, &sets[0]]);
    assert_no_leak(&r.run.all(), &[&old, &sets[0], API_TOKEN], "output");
}

#[tokio::test]
async fn the_drift_check_repairs_a_var_changed_behind_its_back() {
    let current = Secret::new("EAAGcurrentherokutoken0001");
    let fake = fake_heroku(current.expose()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&open_cfg(&fake, dir.path(), APP, 10)).await;
    assert!(t.readable());
    let mut records = BTreeMap::new();
    let check =
        async |records: &mut BTreeMap<_, _>| crate::util::drift_check(&t, records, &current).await;
    // Holding the token already: remembered, nothing written, no restart.
    let first = check(&mut records).await;
    assert!(
        first.synced.is_empty() && first.drifted.is_empty(),
        "{first:?}"
    );
    assert_eq!(fake.with(|d| d.releases), 0);
    // Someone sets an old value in the dashboard: drift, repaired.
    fake.with(|d| {
        d.vars.get_mut(APP).unwrap().insert(
            "WHATSAPP_ACCESS_TOKEN".into(),
            "EAAGoldvaluefromdashboard".into(),
        )
    });
    let second = check(&mut records).await;
    assert_eq!(second.drifted.len(), 1, "{second:?}");
    assert_eq!(var(&fake).as_deref(), Some(current.expose()));
    assert_eq!(fake.with(|d| d.releases), 1);
    assert_clean_requests(&fake, &[current.expose()]);
}

#[tokio::test]
async fn refusals_name_the_scope_rate_limits_are_retried_and_a_hang_times_out() {
    let fake = fake_heroku("EAAGbeforefaultstoken0001").await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&open_cfg(&fake, dir.path(), APP, 10)).await;
    let token = "EAAGafterfaultstoken00001";

    fake.fail_next(Fault::Status(
        403,
        r#"{"id":"forbidden","message":"You do not have access to the app billbytekot-backend."}"#
            .into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    let Err(TargetError::Refused(why)) = out else {
        panic!("{out:?}")
    };
    assert!(
        why.contains("403") && why.contains("(id forbidden)"),
        "{why}"
    );
    assert!(why.contains("`write-protected` OAuth scope"), "{why}");

    fake.fail_next(Fault::Status(
        401,
        r#"{"id":"unauthorized","message":"Invalid credentials provided."}"#.into(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("401") && w.contains("Invalid credentials")),
        "{out:?}"
    );

    // A refusal that quotes the request back (the value and the credential): scrubbed.
    fake.fail_next(Fault::Pass);
    fake.fail_next(Fault::Status(
        422,
        format!(r#"{{"id":"invalid_params","message":"WHATSAPP_ACCESS_TOKEN={token} is invalid for Authorization: Bearer {API_TOKEN}"}}"#),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    let Err(TargetError::Refused(why)) = out else {
        panic!("{out:?}")
    };
    assert!(why.contains("422") && why.contains("[redacted]"), "{why}");
    assert_no_leak(&why, &[token, API_TOKEN], "a platform's error");

    let missing = open_target(&open_cfg(&fake, dir.path(), "no-such-app", 10)).await;
    let (out, _) = push_timed(&missing, token).await;
    assert!(
        matches!(&out, Err(TargetError::Refused(w)) if w.contains("404") && w.contains("no such app")),
        "{out:?}"
    );

    let before = fake.requests().len();
    fake.fail_next(Fault::Status(
        429,
        r#"{"id":"rate_limit","message":"Your account reached the API rate limit. Please wait a few minutes before making new requests"}"#.into(),
        Some(1),
    ));
    fake.fail_next(Fault::Status(
        503,
        r#"{"id":"unavailable","message":"API unavailable"}"#.into(),
        None,
    ));
    let (out, took) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After honoured: {took:?}"
    );
    // 429, 503, the read, the PATCH, the read back.
    assert_eq!(fake.requests().len() - before, 5);
    assert_eq!(var(&fake).as_deref(), Some(token));

    for _ in 0..4 {
        fake.fail_next(Fault::Hang);
    }
    let slow = open_target(&open_cfg(&fake, dir.path(), APP, 2)).await;
    let (out, took) = push_timed(&slow, "EAAGneverarrivestoken0001").await;
    assert!(matches!(out, Err(TargetError::Transient(_))), "{out:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(var(&fake).as_deref(), Some(token));
    assert_clean_requests(&fake, &[token]);
}

#[tokio::test]
async fn config_check_names_an_api_token_that_cannot_be_read() {
    let sb = sandbox().await;
    let token = due_token(&sb);
    let ws = crate::util::Workspace::new(
        &sb,
        &[crate::util::TokenEntry {
            name: "prod",
            value: Some(&token),
            extra: &format!(
                "[[token.target]]\nname = \"heroku-prod\"\nkind = \"heroku_config_var\"\napp = \"{APP}\"\napi_token = {{ env = \"TW_TEST_UNSET_HEROKU_TOKEN\" }}\n"
            ),
        }],
    );
    let r = crate::util::tw(&ws.config, &["config", "check"], &[], None).await;
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.all().contains("token[0].target[0].api_token"), "{r:?}");
    assert!(r.all().contains("TW_TEST_UNSET_HEROKU_TOKEN"), "{r:?}");
}
