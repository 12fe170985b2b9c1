//! The `kubernetes_secret` target through kube-rs against a loopback Kubernetes API server that
//! checks what the API requires (bearer token from the kubeconfig, a JSON merge patch of the
//! Secret carrying the `resourceVersion` it was read at, 409 Conflict when another writer got
//! there first, `Status` errors, a Deployment whose rollout moves through `observedGeneration`,
//! updated and available replicas): a rotation writes the key (other keys kept), restarts the
//! Deployment and waits for its rollout, a conflict re-reads and retries, a rollout that never
//! completes fails the target and the Secret is put back, a later wave failing does the same,
//! the drift check repairs the key, 403 names the Role's verb, 429/500 are retried, a hang
//! times out, and no token or credential is where it should not be. In a pod (`in_a_pod_*`):
//! the binary (a rotation, and the daemon's drift repair) in a private mount namespace with a
//! service account mounted where the kubelet puts it, against the same API server over https
//! (the test CA), authenticated by the mounted token; a missing file or an untrusted server is a clear error, and an error quoting the
//! service account's token is scrubbed.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokenwarden::config::{TargetKind, Workload, WorkloadKind};
use tokenwarden::secret::Secret;
use tokenwarden::target::TargetError;

use crate::util::{
    Fake, FakeState, Fault, SinkOpts, SmtpSink, TokenEntry, Workspace, assert_no_leak, current,
    due_token, mint_source, open_target, prod_spec, push_timed, rotate_with, sandbox, sections,
    state_dir, target_config, write_private,
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
    Fake::start(cluster_router(), cluster_data(token)).await
}

/// The API server as a pod reaches it: https only, its certificate signed by the test CA.
async fn fake_cluster_tls(token: &str) -> Fake<Cluster> {
    Fake::start_tls(cluster_router(), cluster_data(token)).await
}

fn cluster_router() -> axum::Router<FakeState<Cluster>> {
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
        )
}

fn cluster_data(token: &str) -> Cluster {
    Cluster {
        data: BTreeMap::from([
            ("WHATSAPP_ACCESS_TOKEN".to_string(), token.to_string()),
            ("DATABASE_URL".to_string(), "postgres://db/bill".to_string()),
        ]),
        resource_version: 100,
        generation: 7,
        sts_generation: 3,
        ..Cluster::default()
    }
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
    let check =
        async |records: &mut BTreeMap<_, _>| crate::util::drift_check(&t, records, &current).await;
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

/// Where kube-rs's `Config::incluster` reads the pod's service account (kube-client 5,
/// `config/incluster_config.rs`), as the kubelet mounts it.
const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Makes `SA_MOUNT` in this private mount namespace (a tmpfs over its deepest existing
/// parent when the host has none: nothing is created on the host), bind-mounts `$1` on it,
/// then runs the rest of the arguments.
const POD_WRAPPER: &str = r#"set -e
sa=/var/run/secrets/kubernetes.io/serviceaccount
if [ ! -d "$sa" ]; then
  for p in /var/run/secrets/kubernetes.io /var/run/secrets /var/run; do
    [ -d "$p" ] && break
  done
  mount -t tmpfs tokenwarden-test "$p"
  mkdir -p "$sa"
fi
mount --bind "$1" "$sa"
shift
exec "$@"
"#;

/// A service account's files as the kubelet mounts them (`token`, `ca.crt`, `namespace`),
/// each of `missing` left out.
fn service_account(dir: &std::path::Path, missing: &[&str]) -> std::path::PathBuf {
    let sa = dir.join("serviceaccount");
    std::fs::create_dir(&sa).unwrap();
    let ca = std::fs::read_to_string(&crate::util::test_ca().ca_cert).unwrap();
    for (name, text) in [
        ("token", SA_TOKEN),
        ("ca.crt", ca.as_str()),
        ("namespace", NS),
    ] {
        if !missing.contains(&name) {
            write_private(&sa.join(name), text);
        }
    }
    sa
}

/// Whether this process may make a private mount namespace (root, as CI runs the tests).
fn can_unshare() -> bool {
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The real binary with `args` as it runs in a pod: `sa` mounted where the service account is,
/// `KUBERNETES_SERVICE_HOST`/`PORT` naming the API server `fake`, in a private mount namespace
/// (`unshare`, which execs: the child's pid is the binary's), output piped.
fn pod_command(
    fake: &Fake<Cluster>,
    sa: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
) -> std::process::Command {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        POD_WRAPPER,
        "sh",
    ])
    .arg(sa)
    .arg(env!("CARGO_BIN_EXE_tokenwarden"))
    .arg("--config")
    .arg(config)
    .args(args)
    .env_remove("TOKENWARDEN_CONFIG")
    .env_remove("KUBECONFIG")
    .env("TOKENWARDEN_LOG", "tokenwarden=debug,warn")
    .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    .env("KUBERNETES_SERVICE_PORT", fake.port.to_string())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    cmd
}

fn finished(out: std::process::Output) -> crate::util::Run {
    crate::util::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`pod_command`] run to its end, off the async runtime.
async fn in_pod(
    fake: &Fake<Cluster>,
    sa: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
) -> crate::util::Run {
    let mut cmd = pod_command(fake, sa, config, args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    finished(out)
}

/// The daemon (`run`) in a pod until `done` holds (checked every 200 ms, at most 60 s), then
/// stopped with SIGTERM; whether `done` held, and the output.
async fn daemon_in_pod(
    fake: &Fake<Cluster>,
    sa: &std::path::Path,
    config: &std::path::Path,
    done: impl Fn() -> bool,
) -> (bool, crate::util::Run) {
    let child = pod_command(fake, sa, config, &["run"]).spawn().unwrap();
    let started = std::time::Instant::now();
    let mut held = false;
    while started.elapsed() < Duration::from_secs(60) {
        if done() {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crate::util::signal(child.id(), "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    (held, finished(out))
}

/// The target without a kubeconfig: the pod's service account.
fn in_cluster_toml() -> String {
    format!(
        "[[token.target]]\nname = \"k8s-backend\"\nkind = \"kubernetes_secret\"\nwave = 1\ntimeout = \"20s\"\nnamespace = \"{NS}\"\nsecret_name = \"{SECRET}\"\n"
    )
}

/// A workspace rotating `old` (token `prod`, minted by the sandbox) to the in-cluster target.
fn pod_workspace(
    sb: &tokenwarden::sandbox::Sandbox,
    old: &str,
    dir: &std::path::Path,
) -> Workspace {
    let (mint, _) = mint_source(sb, dir, tokenwarden::sandbox::DEMO_SYSTEM_USER_ID);
    let entry = format!("{mint}revoke_after = \"0s\"\n{}", in_cluster_toml());
    Workspace::with_meta(
        sb,
        &[TokenEntry {
            name: "prod",
            value: Some(old),
            extra: &entry,
        }],
        "attempts = 1",
    )
}

/// In a pod, with no kubeconfig: the binary reads the service account kube-rs reads, talks
/// https to the API server trusting only the mounted `ca.crt`, authenticates with the mounted
/// token (the fake answers 401 to anything else), writes the key and keeps the others, and
/// neither token nor the service account's token is in its output.
#[tokio::test]
async fn in_a_pod_the_service_account_writes_the_key_over_https() {
    if !can_unshare() {
        eprintln!("cannot make a mount namespace here (not root): in-cluster case not exercised");
        return;
    }
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_cluster_tls(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account(dir.path(), &[]);
    let ws = pod_workspace(&sb, &old, dir.path());

    let dry = in_pod(
        &fake,
        &sa,
        &ws.config,
        &["rotate", "--token", "prod", "--dry-run"],
    )
    .await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains(&format!("k8s-backend (Kubernetes secret {NS}/{SECRET} key WHATSAPP_ACCESS_TOKEN); holds the current token")),
        "{dry:?}"
    );
    let run = in_pod(&fake, &sa, &ws.config, &["rotate", "--token", "prod"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let new = current(&ws, "prod").await;
    assert_ne!(new, old);
    assert_eq!(key(&fake), Some(new.clone()), "the key holds the new token");
    assert_eq!(
        fake.with(|c| c.data["DATABASE_URL"].clone()),
        "postgres://db/bill",
        "other keys kept"
    );
    let requests = fake.requests();
    let patch = requests
        .iter()
        .find(|q| q.method == "PATCH" && q.uri.contains("/secrets/"))
        .expect("the Secret was patched");
    assert_eq!(
        patch.header("authorization"),
        Some(format!("Bearer {SA_TOKEN}").as_str()),
        "the mounted service-account token"
    );
    assert!(
        requests
            .iter()
            .all(|q| q.header("authorization") == Some(&format!("Bearer {SA_TOKEN}"))),
        "every request as the service account"
    );
    assert_clean_requests(&fake, &[&old, &new]);
    assert_no_leak(
        &format!("{}{}", dry.all(), run.all()),
        &[&old, &new, &b64(&new), SA_TOKEN],
        "output",
    );
}

/// In a pod whose service account is not mounted in full, or whose `ca.crt` is another CA's:
/// the rotation stops before the Secret is touched with a clear error naming what is missing
/// (no panic), no token in the output, and the old token stays current.
#[tokio::test]
async fn in_a_pod_a_missing_service_account_file_or_an_untrusted_server_is_a_clear_error() {
    if !can_unshare() {
        eprintln!("cannot make a mount namespace here (not root): in-cluster case not exercised");
        return;
    }
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_cluster_tls(&old).await;
    for missing in ["token", "ca.crt", "namespace", "token (a directory)"] {
        let dir = tempfile::tempdir().unwrap();
        let (missing, unreadable) = match missing.strip_suffix(" (a directory)") {
            Some(name) => (name, true),
            None => (missing, false),
        };
        let sa = service_account(dir.path(), &[missing]);
        if unreadable {
            // Present but unreadable (root reads a mode-000 file, not a directory).
            std::fs::create_dir(sa.join(missing)).unwrap();
        }
        let ws = pod_workspace(&sb, &old, dir.path());
        let run = in_pod(&fake, &sa, &ws.config, &["rotate", "--token", "prod"]).await;
        assert_ne!(run.code, 0, "{run:?}");
        assert!(!run.all().contains("panicked"), "{run:?}");
        assert!(
            run.stdout.contains(&format!("{SA_MOUNT}/{missing}")),
            "names the missing file: {run:?}"
        );
        assert_eq!(
            current(&ws, "prod").await,
            old,
            "the old token stays current"
        );
        assert_no_leak(&run.all(), &[SA_TOKEN], "output");
    }
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());

    // A `ca.crt` of another CA: the handshake is refused, nothing reaches the server.
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account(dir.path(), &[]);
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|mut p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.self_signed(&rcgen::KeyPair::generate()?)
        })
        .unwrap();
    std::fs::write(sa.join("ca.crt"), other.pem()).unwrap();
    let ws = pod_workspace(&sb, &old, dir.path());
    let run = in_pod(&fake, &sa, &ws.config, &["rotate", "--token", "prod"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!run.all().contains("panicked"), "{run:?}");
    assert!(
        run.stdout
            .contains("invalid peer certificate: UnknownIssuer"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "checked against the service account's {SA_MOUNT}/ca.crt"
        )),
        "names the CA it trusted: {run:?}"
    );
    assert_eq!(current(&ws, "prod").await, old);
    assert_eq!(key(&fake), Some(old.clone()), "the Secret untouched");
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_no_leak(&run.all(), &[SA_TOKEN], "output");
}

/// In a pod, an API server's error that quotes the service account's token (as the 403 of a
/// webhook authorizer may): the token the binary never configured itself is still scrubbed.
#[tokio::test]
async fn in_a_pod_an_error_quoting_the_service_account_token_is_scrubbed() {
    if !can_unshare() {
        eprintln!("cannot make a mount namespace here (not root): in-cluster case not exercised");
        return;
    }
    let sb = sandbox().await;
    let old = due_token(&sb);
    let fake = fake_cluster_tls(&old).await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account(dir.path(), &[]);
    let ws = pod_workspace(&sb, &old, dir.path());
    fake.fail_next(Fault::Pass);
    fake.fail_next(Fault::Status(
        403,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": format!("secrets \"{SECRET}\" is forbidden: User \"system:serviceaccount:{NS}:tokenwarden\" (token {SA_TOKEN}) cannot patch resource \"secrets\" in API group \"\" in the namespace \"{NS}\"")}).to_string(),
        None,
    ));
    let run = in_pod(&fake, &sa, &ws.config, &["rotate", "--token", "prod"]).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "needs `patch` on secrets `{SECRET}` in namespace `{NS}`"
        )),
        "{run:?}"
    );
    assert!(run.stdout.contains("(token [redacted])"), "{run:?}");
    assert_eq!(current(&ws, "prod").await, old);
    assert_no_leak(&run.all(), &[&old, SA_TOKEN], "output");
}

/// The daemon in a pod, as it is deployed: its first check writes the key (tokenwarden never
/// delivered there), and after someone edits the Secret by hand the next check reads it back
/// with the service account and repairs it; no token in its output or audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pod_the_daemon_repairs_a_key_changed_behind_its_back() {
    if !can_unshare() {
        eprintln!("cannot make a mount namespace here (not root): in-cluster case not exercised");
        return;
    }
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(prod_spec());
    let fake = fake_cluster_tls("EAAGstalefromlastyear0000").await;
    let dir = tempfile::tempdir().unwrap();
    let sa = service_account(dir.path(), &[]);
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&token),
            extra: &in_cluster_toml(),
        }],
        &sections(sink.port, ""),
    );
    let holds = || key(&fake).as_deref() == Some(token.as_str());
    let (ok, first) = daemon_in_pod(&fake, &sa, &ws.config, holds).await;
    assert!(ok, "synced: {first:?}");
    fake.with(|c| {
        c.data.insert(
            "WHATSAPP_ACCESS_TOKEN".into(),
            "EAAGkubectleditedthis0000".into(),
        )
    });
    let (ok, second) = daemon_in_pod(&fake, &sa, &ws.config, holds).await;
    assert!(ok, "repaired: {second:?}");
    assert_eq!(
        fake.with(|c| c.data["DATABASE_URL"].clone()),
        "postgres://db/bill",
        "other keys kept"
    );
    let audit = std::fs::read_to_string(state_dir(&ws.config).join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"drifted\":[[\"k8s-backend\""), "{audit}");
    assert_clean_requests(&fake, &[&token]);
    assert_no_leak(
        &format!("{}{}{audit}", first.all(), second.all()),
        &[&token, &b64(&token), SA_TOKEN],
        "daemon output and audit",
    );
}
