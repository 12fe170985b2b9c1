//! Faults in the dependencies during a rotation: Secrets Manager throttling and then down in
//! the middle of a promotion (a fault-injecting proxy in front of moto), and a target that
//! hangs past its timeout. Each must end with the rotation resumed and nothing lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use tokenwarden::sandbox::{self, TokenSpec};

use crate::util::{AWS_ENV, Run, TokenEntry, Workspace, is_valid, moto_current, sandbox};

/// A proxy in front of moto that answers the next `budget` calls of one Secrets Manager
/// operation with a fault instead of passing them on.
pub(crate) struct FaultyProxy {
    pub(crate) port: u16,
    pub(crate) budget: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    operation: &'static str,
    budget: Arc<AtomicU32>,
    http: reqwest::Client,
}

impl FaultyProxy {
    pub(crate) async fn start(operation: &'static str) -> FaultyProxy {
        let budget = Arc::new(AtomicU32::new(0));
        let st = ProxyState {
            upstream: crate::util::moto().endpoint.clone(),
            operation,
            budget: budget.clone(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new().fallback(forward).with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FaultyProxy { port, budget, task }
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    State(st): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if target.ends_with(st.operation)
        && st
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok()
    {
        // Alternate throttling and an outage, as AWS's JSON protocol reports them.
        let left = st.budget.load(Ordering::SeqCst);
        let (status, kind) = if left % 2 == 0 {
            (StatusCode::BAD_REQUEST, "ThrottlingException")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
        };
        return (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            format!("{{\"__type\":\"{kind}\",\"message\":\"injected by the test\"}}"),
        )
            .into_response();
    }
    let mut req = st
        .http
        .request(method, format!("{}{}", st.upstream, uri))
        .body(body);
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| "application/x-amz-json-1.1".parse().unwrap());
    let bytes = resp.bytes().await.unwrap();
    (status, [("content-type", ct)], bytes).into_response()
}

async fn tw(config: &std::path::Path, args: &[&str]) -> Run {
    crate::util::tw(config, args, &AWS_ENV, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_manager_down_mid_promotion_stalls_then_resumes_with_one_mint() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::system_user_60d().issued_ago(45 * 86_400));
    let id = crate::util::unique("tw-faults");
    crate::util::moto_create(&id, &old).await;
    let proxy = FaultyProxy::start("UpdateSecretVersionStage").await;
    let dir = tempfile::tempdir().unwrap();
    let (mint, _) = crate::util::mint_source(&sb, dir.path(), sandbox::DEMO_SYSTEM_USER_ID);
    let extra = format!(
        "store = {{ kind = \"aws\", secret_id = \"{id}\", region = \"us-east-1\", endpoint = \"http://127.0.0.1:{}\" }}\n{mint}revoke_after = \"0s\"\n",
        proxy.port,
    );
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: None,
            extra: &extra,
        }],
    );
    // More failures than the SDK's own retries: the promotion cannot happen on this run.
    proxy.budget.store(12, Ordering::SeqCst);
    let r = tw(&ws.config, &["rotate", "--token", "prod"]).await;
    assert_eq!(r.code, 75, "stalled at promotion, to resume later: {r:?}");
    assert!(r.stdout.contains("step promote"), "{r:?}");
    assert_eq!(moto_current(&id).await, old, "the old token stays current");
    assert!(is_valid(&sb, &old).await);
    // Secrets Manager is back: the same rotation resumes and completes, minting nothing new.
    proxy.budget.store(0, Ordering::SeqCst);
    let r = tw(&ws.config, &["rotate", "--token", "prod"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_ne!(moto_current(&id).await, old);
    assert_eq!(sb.stats().minted, 1);
    assert!(!is_valid(&sb, &old).await);
}

#[tokio::test]
async fn a_target_hanging_past_its_timeout_is_rolled_back_and_retried() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::system_user_60d().issued_ago(45 * 86_400));
    let dir = tempfile::tempdir().unwrap();
    let (mint, _) = crate::util::mint_source(&sb, dir.path(), sandbox::DEMO_SYSTEM_USER_ID);
    let env = dir.path().join(".env");
    crate::util::write_private(&env, &format!("WHATSAPP_ACCESS_TOKEN={old}\n"));
    let hang = dir.path().join("hang");
    std::fs::write(&hang, "").unwrap();
    // The worker hangs while the file `hang` exists.
    let extra = format!(
        r#"{mint}revoke_after = "0s"
[[token.target]]
name = "env"
kind = "dotenv"
path = "{env}"
reload = ["/bin/true"]
[[token.target]]
name = "worker"
kind = "exec"
timeout = "1s"
command = ["/bin/sh", "-c", "cat >/dev/null; while [ -e {hang} ]; do sleep 0.1; done"]
"#,
        env = env.display(),
        hang = hang.display(),
    );
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
    );
    let started = std::time::Instant::now();
    let r = tw(&ws.config, &["rotate", "--token", "prod"]).await;
    assert_eq!(r.code, 75, "{r:?}");
    assert!(r.stdout.contains("worker"), "names the target: {r:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the timeout bounds the hang"
    );
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("WHATSAPP_ACCESS_TOKEN={old}\n"),
        "rolled back"
    );
    std::fs::remove_file(&hang).unwrap();
    let r = tw(&ws.config, &["rotate", "--token", "prod"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        sb.stats().minted,
        1,
        "the retry delivers the same candidate"
    );
    assert!(!is_valid(&sb, &old).await);
}

/// Secrets Manager accepts the connection and never answers (a hung proxy, a black-holed VPC
/// endpoint). The SDK sets no read timeout of its own; without one this check, and a daemon's
/// loop with its shutdown, would wait forever.
#[tokio::test]
async fn a_secrets_manager_that_never_answers_ends_the_check_within_the_store_timeout() {
    let sb = sandbox().await;
    // Never accepted: the kernel completes the handshake and the request waits unanswered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let extra = format!(
        "store = {{ kind = \"aws\", secret_id = \"never/answers\", region = \"us-east-1\", endpoint = \"http://127.0.0.1:{port}\" }}\n"
    );
    let ws = Workspace::new(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: None,
            extra: &extra,
        }],
    );
    let started = std::time::Instant::now();
    let r = tw(&ws.config, &["check"]).await;
    let took = started.elapsed();
    let bound =
        tokenwarden::store::aws::STORE_OPERATION_TIMEOUT + std::time::Duration::from_secs(10);
    assert!(took < bound, "the check took {took:?}");
    assert_eq!(
        r.code, 3,
        "UNKNOWN, to be retried, never a verdict on the token: {r:?}"
    );
    assert!(r.stdout.contains("unavailable"), "{r:?}");
    drop(silent);
}
