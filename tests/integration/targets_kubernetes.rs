//! The `kubernetes_secret` target through kube-rs against a loopback Kubernetes API server that
//! checks what the API requires (bearer token from the kubeconfig, a JSON merge patch of the
//! Secret carrying the `resourceVersion` it was read at, 409 Conflict when another writer got
//! there first, `Status` errors, a Deployment whose rollout moves through `observedGeneration`,
//! updated and available replicas): a rotation writes the key (other keys kept), restarts the
//! Deployment and waits for its rollout, a conflict re-reads and retries, a rollout that never
//! completes fails the target and the Secret is put back, a later wave failing does the same,
//! the drift check repairs the key, 403 names the Role's verb, 429/500 are retried, a hang
//! times out, and no token or credential is where it should not be.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenwarden::config::{TargetKind, Workload, WorkloadKind};
use tokenwarden::secret::Secret;
use tokenwarden::target::{PushEvent, TargetError};

use crate::util::{
    Fake, FakeState, Fault, assert_no_leak, due_token, open_target, push_ctx, push_timed,
    rotate_with, sandbox, target_config, write_private,
};

const SA_TOKEN: &str = "k8s-CANARY-serviceaccount-token-0000";
const NS: &str = "billbytekot";
const SECRET: &str = "whatsapp";
const DEPLOY: &str = "backend";

#[derive(Debug, Default)]
struct Cluster {
    /// The Secret's data, decoded.
    data: BTreeMap<String, String>,
    resource_version: u64,
    /// PATCHes that meet a concurrent writer first (409).
    conflicts: u32,
    generation: i64,
    /// 0: rolled out; 1..=3: the steps of a rollout in progress.
    rollout_step: u32,
    /// A rollout that never gets past its first step.
    stuck: bool,
    /// The `restartedAt` annotations set, in order.
    restarts: Vec<String>,
    /// The StatefulSet `worker`: its generation, rollout step (0 done, 1..=2 in progress) and
    /// restarts.
    sts_generation: i64,
    sts_step: u32,
    sts_restarts: Vec<String>,
}

fn b64(s: &str) -> String {
    tokenwarden::scrub::base64(s.as_bytes())
}

fn unb64(s: &str) -> String {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.trim_end_matches('=').bytes() {
        let v = table.iter().position(|&t| t == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    String::from_utf8(out).unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap(),
        axum::Json(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        })),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {SA_TOKEN}"))
}

fn secret_json(c: &Cluster) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> = c
        .data
        .iter()
        .map(|(k, v)| (k.clone(), b64(v).into()))
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NS, "resourceVersion": c.resource_version.to_string()},
        "data": data,
    })
}

async fn secret(
    State(s): State<FakeState<Cluster>>,
    method: Method,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if ns != NS || name != SECRET {
        return status(404, "NotFound", &format!("secrets \"{name}\" not found"));
    }
    let mut g = s.lock().unwrap();
    let c = &mut g.data;
    if method == Method::PATCH {
        if headers.get("content-type").and_then(|v| v.to_str().ok())
            != Some("application/merge-patch+json")
        {
            return status(415, "UnsupportedMediaType", "expected a merge patch");
        }
        if c.conflicts > 0 {
            // Another writer (a person with kubectl) changes the Secret first.
            c.conflicts -= 1;
            c.data.insert("OTHER_WRITER".into(), "was-here".into());
            c.resource_version += 1;
        }
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let rv = patch["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if rv != c.resource_version.to_string() {
            return status(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on secrets \"{SECRET}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            );
        }
        if let Some(data) = patch["data"].as_object() {
            for (k, v) in data {
                match v.as_str() {
                    Some(v) => {
                        c.data.insert(k.clone(), unb64(v));
                    }
                    None => {
                        c.data.remove(k);
                    }
                }
            }
        }
        c.resource_version += 1;
    }
    axum::Json(secret_json(c)).into_response()
}

fn deployment_json(c: &Cluster) -> serde_json::Value {
    let (observed, updated, available, total) = match c.rollout_step {
        0 => (c.generation, 2, 2, 2),
        1 => (c.generation - 1, 0, 2, 2),
        2 => (c.generation, 1, 2, 3),
        _ => (c.generation, 2, 1, 2),
    };
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOY, "namespace": NS, "generation": c.generation},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": DEPLOY}},
            "template": {
                "metadata": {"labels": {"app": DEPLOY}, "annotations": {"kubectl.kubernetes.io/restartedAt": c.restarts.last()}},
                "spec": {"containers": [{"name": "app", "image": "billbytekot/backend:1"}]}
            }
        },
        "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available, "replicas": total},
    })
}

async fn deployment(
    State(s): State<FakeState<Cluster>>,
    method: Method,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if ns != NS || name != DEPLOY {
        return status(
            404,
            "NotFound",
            &format!("deployments.apps \"{name}\" not found"),
        );
    }
    let mut g = s.lock().unwrap();
    let c = &mut g.data;
    if method == Method::PATCH {
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(at) = patch["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].as_str() else {
            return status(422, "Invalid", "expected the restartedAt annotation");
        };
        c.restarts.push(at.to_string());
        c.generation += 1;
        c.rollout_step = 1;
        return axum::Json(deployment_json(c)).into_response();
    }
    let out = deployment_json(c);
    if c.rollout_step > 0 && !(c.stuck && c.rollout_step == 1) {
        c.rollout_step = (c.rollout_step + 1) % 4;
    }
    axum::Json(out).into_response()
}

fn stateful_set_json(c: &Cluster) -> serde_json::Value {
    let (observed, updated, ready, current) = match c.sts_step {
        0 => (c.sts_generation, 2, 2, "worker-new"),
        1 => (c.sts_generation, 1, 1, "worker-old"),
        _ => (c.sts_generation, 2, 1, "worker-old"),
    };
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "worker", "namespace": NS, "generation": c.sts_generation},
        "spec": {
            "replicas": 2,
            "serviceName": "worker",
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {
                "metadata": {"labels": {"app": "worker"}},
                "spec": {"containers": [{"name": "worker", "image": "billbytekot/worker:1"}]}
            }
        },
        "status": {"observedGeneration": observed, "updatedReplicas": updated, "readyReplicas": ready, "replicas": 2,
                   "currentRevision": current, "updateRevision": "worker-new"},
    })
}

async fn stateful_set(
    State(s): State<FakeState<Cluster>>,
    method: Method,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if ns != NS || name != "worker" {
        return status(
            404,
            "NotFound",
            &format!("statefulsets.apps \"{name}\" not found"),
        );
    }
    let mut g = s.lock().unwrap();
    let c = &mut g.data;
    if method == Method::PATCH {
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(at) = patch["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].as_str() else {
            return status(422, "Invalid", "expected the restartedAt annotation");
        };
        c.sts_restarts.push(at.to_string());
        c.sts_generation += 1;
        c.sts_step = 1;
        return axum::Json(stateful_set_json(c)).into_response();
    }
    let out = stateful_set_json(c);
    if c.sts_step > 0 {
        c.sts_step = (c.sts_step + 1) % 3;
    }
    axum::Json(out).into_response()
}

async fn fake_cluster(token: &str) -> Fake<Cluster> {
    Fake::start(
        axum::Router::new()
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                axum::routing::get(secret).patch(secret),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                axum::routing::get(deployment).patch(deployment),
            )
            .route(
                "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
                axum::routing::get(stateful_set).patch(stateful_set),
            ),
        Cluster {
            data: BTreeMap::from([
                ("WHATSAPP_ACCESS_TOKEN".to_string(), token.to_string()),
                ("DATABASE_URL".to_string(), "postgres://db/bill".to_string()),
            ]),
            resource_version: 100,
            generation: 7,
            sts_generation: 3,
            ..Cluster::default()
        },
    )
    .await
}

fn kubeconfig(fake: &Fake<Cluster>, dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    write_private(
        &p,
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tokenwarden\ncurrent-context: fake\nusers:\n- name: tokenwarden\n  user:\n    token: {SA_TOKEN}\n",
            fake.url()
        ),
    );
    p
}

fn key(fake: &Fake<Cluster>) -> Option<String> {
    fake.with(|c| c.data.get("WHATSAPP_ACCESS_TOKEN").cloned())
}

fn target_toml(fake: &Fake<Cluster>, dir: &std::path::Path, timeout: &str) -> String {
    format!(
        "[[token.target]]\nname = \"k8s-backend\"\nkind = \"kubernetes_secret\"\nwave = 1\ntimeout = \"{timeout}\"\nnamespace = \"{NS}\"\nsecret_name = \"{SECRET}\"\nkubeconfig = \"{}\"\ncontext = \"fake\"\nrestart = [\"deployment/{DEPLOY}\"]\n",
        kubeconfig(fake, dir).display()
    )
}

fn cfg(
    fake: &Fake<Cluster>,
    dir: &std::path::Path,
    restart: bool,
    timeout: u64,
) -> tokenwarden::config::TargetConfig {
    target_config(
        "k8s-backend",
        TargetKind::KubernetesSecret {
            namespace: NS.into(),
            secret_name: SECRET.into(),
            key: "WHATSAPP_ACCESS_TOKEN".into(),
            kubeconfig: Some(kubeconfig(fake, dir)),
            context: None,
            restart: if restart {
                vec![
                    Workload {
                        kind: WorkloadKind::Deployment,
                        name: DEPLOY.into(),
                    },
                    Workload {
                        kind: WorkloadKind::StatefulSet,
                        name: "worker".into(),
                    },
                ]
            } else {
                Vec::new()
            },
        },
        Duration::from_secs(timeout),
    )
}

/// No token (as is or base64) in a URL, a header or a read; the credential only in
/// `Authorization`.
fn assert_clean_requests(fake: &Fake<Cluster>, tokens: &[&str]) {
    for r in fake.requests() {
        let headers: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k != "authorization")
            .collect();
        let mut seen = format!("{} {} {headers:?}", r.method, r.uri);
        if !(r.method == "PATCH" && r.uri.contains("/secrets/")) {
            seen.push_str(&r.body);
        }
        let mut all: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
        all.extend(tokens.iter().map(|t| b64(t)));
        all.push(SA_TOKEN.into());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        assert_no_leak(&seen, &all, "a request to the API server");
    }
}

#[tokio::test]
async fn a_rotation_writes_the_key_restarts_the_deployment_and_waits_for_the_rollout() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_cluster(&old).await;
    let dir = tempfile::tempdir().unwrap();
    // A proxy in the environment is not taken (it would see the credential and the token):
    // the API server is reached directly.
    let r = rotate_with(
        &sb,
        &old,
        &target_toml(&fake, dir.path(), "30s"),
        &[("HTTPS_PROXY", "http://127.0.0.1:9")],
    )
    .await;
    assert_eq!(r.dry.code, 0, "{:?}", r.dry);
    assert!(
        r.dry.stdout.contains(&format!("wave 1: k8s-backend: target k8s-backend (Kubernetes secret {NS}/{SECRET} key WHATSAPP_ACCESS_TOKEN, restarting deployment/{DEPLOY}); holds the current token (read back with GET on the Secret)")),
        "{:?}",
        r.dry
    );
    assert_eq!(r.run.code, 0, "{:?}", r.run);
    assert_ne!(r.current, old);
    assert_eq!(key(&fake), Some(r.current.clone()));
    assert_eq!(
        fake.with(|c| c.data["DATABASE_URL"].clone()),
        "postgres://db/bill",
        "other keys kept"
    );
    assert_eq!(fake.with(|c| c.restarts.len()), 1, "restarted once");
    assert_eq!(
        fake.with(|c| c.rollout_step),
        0,
        "waited until the rollout completed"
    );
    let patch = fake
        .requests()
        .into_iter()
        .find(|q| q.method == "PATCH" && q.uri.contains("/secrets/"))
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&patch.body).unwrap();
    assert_eq!(
        body["metadata"]["resourceVersion"], "100",
        "the version it read"
    );
    assert_eq!(
        body["data"].as_object().unwrap().len(),
        1,
        "only the one key"
    );
    assert_clean_requests(&fake, &[&old, &r.current]);
    assert_no_leak(
        &format!("{}{}", r.dry.all(), r.run.all()),
        &[&old, &r.current, SA_TOKEN],
        "output",
    );
}

#[tokio::test]
async fn a_deployment_and_a_stateful_set_are_both_restarted_and_waited_for() {
    let fake = fake_cluster("EAAGbeforerestartstoken01").await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), true, 20)).await;
    let token = "EAAGafterrestartstoken001";
    let (out, _) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    assert_eq!(key(&fake).as_deref(), Some(token));
    assert_eq!(
        fake.with(|c| (c.restarts.len(), c.sts_restarts.len())),
        (1, 1)
    );
    assert_eq!(
        fake.with(|c| (c.rollout_step, c.sts_step)),
        (0, 0),
        "both rollouts waited for until complete"
    );
    // Pushed again with the same token: nothing written, nothing restarted.
    let (again, _) = push_timed(&t, token).await;
    assert_eq!(again, Ok(false));
    assert_eq!(
        fake.with(|c| (c.restarts.len(), c.sts_restarts.len())),
        (1, 1)
    );
    assert_clean_requests(&fake, &[token]);
}

#[tokio::test]
async fn a_conflict_rereads_and_keeps_the_other_writers_change() {
    let fake = fake_cluster("EAAGbeforeconflicttoken01").await;
    fake.with(|c| c.conflicts = 1);
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), false, 10)).await;
    let token = "EAAGafterconflicttoken001";
    let (out, _) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    assert_eq!(key(&fake).as_deref(), Some(token));
    assert_eq!(
        fake.with(|c| c.data.get("OTHER_WRITER").cloned())
            .as_deref(),
        Some("was-here")
    );
    let patches = fake
        .requests()
        .iter()
        .filter(|q| q.method == "PATCH")
        .count();
    assert_eq!(
        patches, 2,
        "refused once with 409, then sent at the new version"
    );
    assert_clean_requests(&fake, &[token]);
}

#[tokio::test]
async fn a_rollout_that_never_completes_fails_the_target_and_the_secret_is_put_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_cluster(&old).await;
    fake.with(|c| c.stuck = true);
    let dir = tempfile::tempdir().unwrap();
    let r = rotate_with(&sb, &old, &target_toml(&fake, dir.path(), "4s"), &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert!(
        r.run.stdout.contains(&format!(
            "the rollout of deployment/{DEPLOY} did not complete"
        )),
        "{:?}",
        r.run
    );
    assert_eq!(r.current, old);
    assert_eq!(
        key(&fake),
        Some(old.clone()),
        "the Secret is back on the old token"
    );
    assert!(
        fake.with(|c| c.restarts.len()) >= 2,
        "the rollback restarted again"
    );
    assert_no_leak(&r.run.all(), &[&old, SA_TOKEN], "output");
}

#[tokio::test]
async fn a_later_wave_failing_puts_the_old_token_back() {
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_cluster(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let targets = format!(
        "{}[[token.target]]\nname = \"prod-worker\"\nkind = \"exec\"\nwave = 2\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
        target_toml(&fake, dir.path(), "30s")
    );
    let r = rotate_with(&sb, &old, &targets, &[]).await;
    assert_eq!(r.run.code, 1, "{:?}", r.run);
    assert_eq!(key(&fake), Some(old.clone()));
    assert_eq!(
        fake.with(|c| c.restarts.len()),
        2,
        "restarted on the candidate, then on the old token"
    );
    assert_no_leak(&r.run.all(), &[&old, SA_TOKEN], "output");
}

#[tokio::test]
async fn the_drift_check_repairs_a_key_changed_behind_its_back() {
    let current = Secret::new("EAAGcurrentkubernetestoken1");
    let fake = fake_cluster(current.expose()).await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), false, 10)).await;
    let mut records = BTreeMap::new();
    let check = async |records: &mut BTreeMap<_, _>| {
        tokenwarden::delivery::reconcile(
            std::slice::from_ref(&t),
            records,
            &current,
            &push_ctx(PushEvent::Sync),
            &tokenwarden::target::http_client(),
            1,
        )
        .await
    };
    let first = check(&mut records).await;
    assert!(
        first.synced.is_empty() && first.drifted.is_empty(),
        "{first:?}"
    );
    fake.with(|c| {
        c.data.insert(
            "WHATSAPP_ACCESS_TOKEN".into(),
            "EAAGkubectleditedthis".into(),
        )
    });
    let second = check(&mut records).await;
    assert_eq!(second.drifted.len(), 1, "{second:?}");
    assert_eq!(key(&fake).as_deref(), Some(current.expose()));
    assert_clean_requests(&fake, &[current.expose()]);
}

#[tokio::test]
async fn forbidden_names_the_role_verb_rate_limits_are_retried_a_hang_times_out() {
    let fake = fake_cluster("EAAGbeforefaultskube00001").await;
    let dir = tempfile::tempdir().unwrap();
    let t = open_target(&cfg(&fake, dir.path(), false, 10)).await;
    let token = "EAAGafterfaultskube000001";

    fake.fail_next(Fault::Pass);
    fake.fail_next(Fault::Status(
        403,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": format!("secrets \"{SECRET}\" is forbidden: User \"system:serviceaccount:tokenwarden:tokenwarden\" (token {SA_TOKEN}) cannot patch resource \"secrets\" in API group \"\" in the namespace \"{NS}\" to {}", b64(token))}).to_string(),
        None,
    ));
    let (out, _) = push_timed(&t, token).await;
    let Err(TargetError::Refused(why)) = out else {
        panic!("{out:?}")
    };
    assert!(why.contains("forbidden (403)"), "{why}");
    assert!(why.contains("(token [redacted])"), "{why}");
    assert_no_leak(
        &why,
        &[token, &b64(token), SA_TOKEN],
        "an API server's error",
    );
    assert!(
        why.contains(&format!(
            "needs `patch` on secrets `{SECRET}` in namespace `{NS}`"
        )),
        "{why}"
    );

    let before = fake.requests().len();
    fake.fail_next(Fault::Status(429, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"TooManyRequests","message":"too many requests","code":429}"#.into(), Some(1)));
    fake.fail_next(Fault::Status(500, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"InternalError","message":"etcdserver: leader changed","code":500}"#.into(), None));
    let (out, _) = push_timed(&t, token).await;
    assert_eq!(out, Ok(true));
    // 429, 500, the read, the patch, the read back.
    assert_eq!(fake.requests().len() - before, 5);
    assert_eq!(key(&fake).as_deref(), Some(token));

    for _ in 0..6 {
        fake.fail_next(Fault::Hang);
    }
    let slow = open_target(&cfg(&fake, dir.path(), false, 2)).await;
    let (out, took) = push_timed(&slow, "EAAGneverarriveskube00001").await;
    assert!(matches!(out, Err(TargetError::Transient(_))), "{out:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(key(&fake).as_deref(), Some(token));
    assert_clean_requests(&fake, &[token]);
}

/// `deploy/kubernetes-rbac.yaml` is least privilege: a Role (never a ClusterRole) whose every
/// rule names its resources and allows only `get` and `patch`, bound by a RoleBinding in the
/// same namespace. Read with PyYAML, as `kubectl apply` would parse it.
#[test]
fn the_kubernetes_role_is_least_privilege() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes-rbac.yaml");
    let out = std::process::Command::new(crate::util::venv().join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let docs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
    let role = &docs[1];
    for rule in role["rules"].as_array().unwrap() {
        assert!(
            !rule["resourceNames"].as_array().unwrap().is_empty(),
            "every rule names its objects: {rule}"
        );
        for verb in rule["verbs"].as_array().unwrap() {
            assert!(["get", "patch"].contains(&verb.as_str().unwrap()), "{rule}");
        }
    }
    assert_eq!(
        role["rules"][0]["resources"],
        serde_json::json!(["secrets"]),
        "the Secret first"
    );
    let binding = &docs[2];
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["metadata"]["namespace"],
        role["metadata"]["namespace"]
    );
}
