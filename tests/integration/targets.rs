//! Delivery targets against real things on loopback: a webhook receiver (axum) that checks
//! signatures as the docs tell receivers to, real commands through `sh`, and verify URLs.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use jiff::Timestamp;
use tokenwarden::secret::Secret;
use tokenwarden::target::TargetError;
use tokenwarden::target::exec::{self, ExecTarget};
use tokenwarden::target::verify::Verify;
use tokenwarden::target::webhook::{self, DEFAULT_TOLERANCE_SECS, Delivery, Webhook};

use crate::util::{assert_no_leak, free_port};

const TOKEN: &str = "EAAGtargetcanaryTOKEN0123456789";
const HOOK_SECRET: &str = "whsec_targetcanarySECRET";

/// One request as the receiver saw it.
struct Seen {
    method: Method,
    headers: HeaderMap,
    body: Vec<u8>,
    /// `webhook::verify` at arrival, when the receiver has a secret.
    verified: Option<Result<(), &'static str>>,
}

/// How the receiver answers: the n-th request gets `answers[n]` (the last one repeats), after
/// `delay`.
struct Script {
    answers: Vec<(u16, Option<&'static str>)>,
    delay: Duration,
    secret: Option<Secret>,
}

struct Shared {
    script: Script,
    seen: Mutex<Vec<Seen>>,
}

/// A loopback HTTP server that records every request and answers by its script.
struct Receiver {
    shared: Arc<Shared>,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        let shared = Arc::new(Shared {
            script,
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { shared, port, task }
    }

    fn answering(answers: &[u16]) -> Script {
        Script {
            answers: answers.iter().map(|&a| (a, None)).collect(),
            delay: Duration::ZERO,
            secret: Some(Secret::new(HOOK_SECRET)),
        }
    }

    /// A URL whose path and query carry canaries of their own (some hook URLs hold a secret).
    fn url(&self) -> reqwest::Url {
        format!(
            "http://127.0.0.1:{}/hook/path-canary?key=query-canary",
            self.port
        )
        .parse()
        .unwrap()
    }

    fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    fn seen<T>(&self, f: impl FnOnce(&[Seen]) -> T) -> T {
        f(&self.shared.seen.lock().unwrap())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(st): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    // The receiver's side of the scheme, exactly as the module docs describe it.
    let verified = st.script.secret.as_ref().map(|secret| {
        let header = headers
            .get(webhook::DEFAULT_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        webhook::verify(
            header,
            &body,
            secret,
            Timestamp::now().as_second(),
            DEFAULT_TOLERANCE_SECS,
        )
    });
    let n = {
        let mut seen = st.seen.lock().unwrap();
        seen.push(Seen {
            method,
            headers,
            body: body.to_vec(),
            verified,
        });
        seen.len() - 1
    };
    tokio::time::sleep(st.script.delay).await;
    let (status, retry_after) = st.script.answers[n.min(st.script.answers.len() - 1)];
    let mut out = HeaderMap::new();
    if let Some(r) = retry_after {
        out.insert("retry-after", r.parse().unwrap());
    }
    if matches!(verified, Some(Err(_))) {
        return (StatusCode::UNAUTHORIZED, out);
    }
    (StatusCode::from_u16(status).unwrap(), out)
}

fn hook(r: &Receiver) -> Webhook {
    Webhook::new(r.url(), Secret::new(HOOK_SECRET))
        .unwrap()
        .with_timeout(Duration::from_secs(5))
        .with_retries(3, Duration::from_millis(10))
}

fn delivery(token: &Secret) -> Delivery<'_> {
    Delivery {
        token_name: "prod",
        token,
        expires_at: Some(Timestamp::from_second(1_900_000_000).unwrap()),
        event: tokenwarden::target::PushEvent::Rotation,
    }
}

/// Neither the token, the webhook secret nor the URL's canaries in `text`.
fn assert_clean(text: &str, what: &str) {
    assert_no_leak(
        text,
        &[TOKEN, HOOK_SECRET, "path-canary", "query-canary"],
        what,
    );
}

fn error_text(e: &TargetError) -> String {
    format!("{e}\n{e:?}")
}

#[tokio::test]
async fn webhook_push_arrives_once_signed_with_the_documented_fields() {
    let r = Receiver::start(Receiver::answering(&[200])).await;
    let token = Secret::new(TOKEN);
    let now = Timestamp::now();
    let w = hook(&r);
    w.push(&delivery(&token), now).await.unwrap();
    assert_clean(&format!("{w:?}"), "the webhook's Debug");

    assert_eq!(r.count(), 1);
    r.seen(|seen| {
        let s = &seen[0];
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.verified, Some(Ok(())));
        assert_eq!(s.headers["content-type"], "application/json");
        let header = s.headers[webhook::DEFAULT_HEADER].to_str().unwrap();
        let t: i64 = header
            .strip_prefix("t=")
            .and_then(|h| h.split_once(",v1="))
            .and_then(|(t, _)| t.parse().ok())
            .unwrap_or_else(|| panic!("{header}"));
        assert!((t - now.as_second()).abs() <= 1, "{header}");
        let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "token_name": "prod",
                "token": TOKEN,
                "fingerprint": token.fingerprint().to_string(),
                "expires_at": "2030-03-17T17:46:40Z",
                "sent_at": Timestamp::from_second(now.as_second()).unwrap().to_string(),
                "event": "rotation",
            })
        );
    });
}

#[tokio::test]
async fn webhook_replayed_or_tampered_request_fails_verify() {
    let r = Receiver::start(Receiver::answering(&[200])).await;
    let token = Secret::new(TOKEN);
    hook(&r)
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap();
    let secret = Secret::new(HOOK_SECRET);
    r.seen(|seen| {
        let s = &seen[0];
        let header = s.headers[webhook::DEFAULT_HEADER].to_str().unwrap();
        let now = Timestamp::now().as_second();
        assert_eq!(webhook::verify(header, &s.body, &secret, now, 300), Ok(()));
        // The same request, captured and sent again after the window: refused.
        let replay = webhook::verify(header, &s.body, &secret, now + 301, 300);
        assert!(replay.unwrap_err().contains("tolerance"), "{replay:?}");
        // A changed body (another token slipped in): refused.
        let tampered = String::from_utf8(s.body.clone())
            .unwrap()
            .replace(TOKEN, "EAAGattackerTOKEN");
        assert_eq!(
            webhook::verify(header, tampered.as_bytes(), &secret, now, 300),
            Err("signature mismatch")
        );
        // The right body under another secret: refused.
        assert_eq!(
            webhook::verify(header, &s.body, &Secret::new("whsec_other"), now, 300),
            Err("signature mismatch")
        );
    });
}

#[tokio::test]
async fn webhook_retries_5xx_and_succeeds_on_the_third_attempt() {
    let r = Receiver::start(Receiver::answering(&[500, 503, 200])).await;
    let token = Secret::new(TOKEN);
    hook(&r)
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap();
    assert_eq!(r.count(), 3);
    r.seen(|seen| {
        for s in seen {
            // Every attempt is signed on its own (and the receiver checked each one).
            assert_eq!(s.verified, Some(Ok(())));
        }
        assert_eq!(seen[0].body, seen[2].body);
    });
}

#[tokio::test]
async fn webhook_gives_up_as_transient_after_the_last_5xx() {
    let r = Receiver::start(Receiver::answering(&[502])).await;
    let token = Secret::new(TOKEN);
    let e = hook(&r)
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    assert!(e.to_string().contains("502"), "{e}");
    assert!(e.to_string().contains("3 attempts"), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", r.port)),
        "{e}"
    );
    assert_clean(&error_text(&e), "a webhook error");
    assert_eq!(r.count(), 3);
}

#[tokio::test]
async fn webhook_4xx_is_refused_at_once() {
    let r = Receiver::start(Receiver::answering(&[400])).await;
    let token = Secret::new(TOKEN);
    let e = hook(&r)
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("400 Bad Request"), "{e}");
    assert_clean(&error_text(&e), "a webhook error");
    assert_eq!(r.count(), 1);
}

#[tokio::test]
async fn webhook_with_the_wrong_secret_is_refused_by_the_receiver() {
    let r = Receiver::start(Receiver::answering(&[200])).await;
    let token = Secret::new(TOKEN);
    let e = Webhook::new(r.url(), Secret::new("whsec_wrong"))
        .unwrap()
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    r.seen(|seen| assert_eq!(seen[0].verified, Some(Err("signature mismatch"))));
}

#[tokio::test]
async fn webhook_honours_retry_after_and_refuses_a_long_one() {
    let mut script = Receiver::answering(&[429, 200]);
    script.answers[0].1 = Some("1");
    let r = Receiver::start(script).await;
    let token = Secret::new(TOKEN);
    let started = Instant::now();
    hook(&r)
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.count(), 2);

    let mut script = Receiver::answering(&[429, 200]);
    script.answers[0].1 = Some("120");
    let r = Receiver::start(script).await;
    let e = hook(&r)
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    assert!(e.to_string().contains("2m, longer than 1m"), "{e}");
    assert_eq!(r.count(), 1);
}

#[tokio::test]
async fn webhook_slow_receiver_times_out_as_transient() {
    let mut script = Receiver::answering(&[200]);
    script.delay = Duration::from_secs(3);
    let r = Receiver::start(script).await;
    let token = Secret::new(TOKEN);
    let started = Instant::now();
    let e = hook(&r)
        .with_timeout(Duration::from_millis(300))
        .with_retries(2, Duration::from_millis(10))
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    assert!(e.to_string().contains("no answer within 300ms"), "{e}");
    assert_clean(&error_text(&e), "a webhook error");
    assert_eq!(r.count(), 2);
}

#[tokio::test]
async fn webhook_unreachable_is_transient_and_names_no_url() {
    let url = format!(
        "http://127.0.0.1:{}/hook/path-canary?key=query-canary",
        free_port()
    );
    let token = Secret::new(TOKEN);
    let e = Webhook::new(url.parse().unwrap(), Secret::new(HOOK_SECRET))
        .unwrap()
        .with_retries(2, Duration::from_millis(10))
        .push(&delivery(&token), Timestamp::now())
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    assert!(e.to_string().contains("could not connect"), "{e}");
    assert_clean(&error_text(&e), "a webhook error");
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn exec_command_reads_exactly_the_token_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stdin");
    let token = Secret::new(TOKEN);
    let got = exec::run(
        &argv(&["sh", "-c", "cat > \"$OUT\"; echo done"]),
        Some(&token),
        &[("OUT".into(), out.display().to_string())],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Exactly the token: no newline, nothing else.
    assert_eq!(read(&out), TOKEN);
    assert_eq!(got.stdout, "done\n");
    assert_eq!(got.stderr, "");
}

#[tokio::test]
async fn exec_target_passes_name_and_fingerprint_never_the_token_in_argv_or_env() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let script = "cat > \"$0.stdin\"; env > \"$0.env\"; echo \"$0 $@\" > \"$0.args\"";
    let command = argv(&["sh", "-c", script, rec.to_str().unwrap(), "extra-arg"]);
    let target = ExecTarget::new(command.clone(), Duration::from_secs(10));
    assert_eq!(target.command(), command.as_slice());
    let token = Secret::new(TOKEN);
    target
        .push(&token, "prod", token.fingerprint())
        .await
        .unwrap();

    assert_eq!(read(&rec.with_extension("stdin")), TOKEN);
    // The args the child saw (what `ps` shows) are the configured ones, without the token.
    let args = read(&rec.with_extension("args"));
    assert_eq!(args, format!("{} extra-arg\n", rec.display()));
    assert_no_leak(&args, &[TOKEN], "the child's argv");

    // Only the inherited names and the two tokenwarden variables (plus what sh itself sets):
    // cargo's variables, which this test process has, must not get through.
    let env = read(&rec.with_extension("env"));
    assert_no_leak(&env, &[TOKEN], "the child's environment");
    let allowed = [
        "PATH",
        "HOME",
        "LANG",
        "TOKENWARDEN_TOKEN_NAME",
        "TOKENWARDEN_FINGERPRINT",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
    ];
    // The test would prove nothing if this process had nothing else to pass on.
    assert!(
        std::env::vars_os().any(|(k, _)| !allowed.iter().any(|a| k == *a)),
        "the test process has only allowed variables"
    );
    for line in env.lines() {
        let name = line.split_once('=').map_or(line, |(n, _)| n);
        assert!(allowed.contains(&name), "{name} reached the child:\n{env}");
    }
    assert!(env.contains("TOKENWARDEN_TOKEN_NAME=prod\n"), "{env}");
    assert!(
        env.contains(&format!(
            "TOKENWARDEN_FINGERPRINT={}\n",
            token.fingerprint()
        )),
        "{env}"
    );
    if let Ok(path) = std::env::var("PATH") {
        assert!(env.contains(&format!("PATH={path}\n")), "{env}");
    }
}

#[tokio::test]
async fn exec_nonzero_exit_is_refused_with_the_scrubbed_stderr() {
    let token = Secret::new(TOKEN);
    let e = exec::run(
        &argv(&[
            "sh",
            "-c",
            "t=$(cat); echo \"starting\" >&2; echo \"bad token: $t\" >&2; exit 3",
        ]),
        Some(&token),
        &[],
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, TargetError::Refused(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "\"sh\" exited with status 3: bad token: [token]"
    );
    assert_clean(&error_text(&e), "an exec error");
}

#[tokio::test]
async fn exec_a_command_that_cannot_start_is_refused_with_its_path() {
    let e = exec::run(
        &argv(&["/nonexistent/tokenwarden-hook", "--flag"]),
        Some(&Secret::new(TOKEN)),
        &[],
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, TargetError::Refused(_)), "{e:?}");
    assert!(
        e.to_string().contains("/nonexistent/tokenwarden-hook"),
        "{e}"
    );
    let empty = exec::run(&[], None, &[], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(empty, TargetError::Refused(_)), "{empty:?}");
}

/// Whether `pid` is a live process (a zombie is dead: it only waits to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the command name in parentheses: `123 (sleep) S ...`.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn pids(path: &Path) -> Vec<u32> {
    read(path)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Waits up to 2 s for every pid to be gone.
async fn assert_gone(pids: &[u32]) {
    let until = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| alive(p)) {
        assert!(Instant::now() < until, "still running: {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exec_timeout_kills_the_command_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    // A grandchild in the background, and the shell itself waiting.
    let script = "sleep 30 & echo $! > \"$0\"; echo $$ >> \"$0\"; sleep 30";
    let started = Instant::now();
    let e = exec::run(
        &argv(&["sh", "-c", script, pidfile.to_str().unwrap()]),
        Some(&Secret::new(TOKEN)),
        &[],
        Duration::from_millis(500),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    assert_eq!(e.to_string(), "\"sh\" did not finish within 500ms; killed");
    let pids = pids(&pidfile);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_gone(&pids).await;
}

#[tokio::test]
async fn exec_background_jobs_left_behind_are_killed_and_do_not_hold_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let started = Instant::now();
    let out = exec::run(
        &argv(&[
            "sh",
            "-c",
            "sleep 30 & echo $! > \"$0\"; echo ok",
            pidfile.to_str().unwrap(),
        ]),
        None,
        &[],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.stdout, "ok\n");
    assert_gone(&pids(&pidfile)).await;
}

#[tokio::test]
async fn exec_dropping_the_future_kills_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let argv = argv(&[
        "sh",
        "-c",
        "sleep 30 & echo $! $$ > \"$0\"; wait",
        pidfile.to_str().unwrap(),
    ]);
    // Shutdown drops the future; the command must not outlive it.
    let run = exec::run(&argv, None, &[], Duration::from_secs(60));
    let cut = tokio::time::timeout(Duration::from_millis(500), run).await;
    assert!(cut.is_err(), "{cut:?}");
    assert_gone(&pids(&pidfile)).await;
}

#[tokio::test]
async fn verify_url_passes_once_the_app_answers_2xx() {
    let mut script = Receiver::answering(&[503, 503, 200]);
    script.secret = None;
    let r = Receiver::start(script).await;
    let client = reqwest::Client::new();
    Verify::Url(r.url())
        .check(&client, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.count(), 3);
    r.seen(|seen| assert!(seen.iter().all(|s| s.method == Method::GET)));
}

#[tokio::test]
async fn verify_url_failing_until_the_deadline_names_the_status() {
    let mut script = Receiver::answering(&[404]);
    script.secret = None;
    let r = Receiver::start(script).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let v = Verify::Url(r.url());
    let e = v.check(&client, Duration::from_secs(2)).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(matches!(e, TargetError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("404 Not Found"), "{e}");
    assert!(r.count() >= 2, "{}", r.count());
    assert_clean(&format!("{}\n{v:?}", error_text(&e)), "a verify error");

    // An app that is still starting (a 5xx) is worth another try later.
    let mut script = Receiver::answering(&[502]);
    script.secret = None;
    let r = Receiver::start(script).await;
    let e = Verify::Url(r.url())
        .check(&client, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
    assert!(e.to_string().contains("502"), "{e}");
}

#[tokio::test]
async fn verify_command_must_exit_0_in_time() {
    let client = reqwest::Client::new();
    Verify::Command(argv(&["sh", "-c", "exit 0"]))
        .check(&client, Duration::from_secs(5))
        .await
        .unwrap();
    let e = Verify::Command(argv(&["sh", "-c", "echo not ready >&2; exit 1"]))
        .check(&client, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        TargetError::Refused("\"sh\" exited with status 1: not ready".into())
    );
    let e = Verify::Command(argv(&["sleep", "30"]))
        .check(&client, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, TargetError::Transient(_)), "{e:?}");
}
