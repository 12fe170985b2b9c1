//! No secret where it does not belong: one daemon run that checks, rotates (mint), delivers to
//! a dotenv file, a webhook and a command, revokes, emails over STARTTLS with a password and
//! serves metrics, all with canary values; then every output is searched for every canary.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use tokenwarden::sandbox::{self, Endpoint, Fault, TokenSpec};

use crate::util::{SinkOpts, SmtpSink, TokenEntry, Workspace, sandbox};

const SMTP_PASSWORD: &str = "smtp-canary-PASSWORD-7f3a";
const HOOK_SECRET: &str = "whsec_canary_HOOK_91c2";
const URL_CANARY: &str = "url-canary-QUERY-5d1e";

/// Every regular file under `dir`, recursively, with its text (lossy).
fn files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if e.file_type().unwrap().is_file() {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                out.push((p, text));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_canary_reaches_any_output() {
    let sb = sandbox().await;
    let old = sb.issue_token(TokenSpec::system_user_60d().issued_ago(45 * 86_400));
    let admin = sb.issue_token(TokenSpec::system_user_never());
    let ca = crate::util::test_ca();
    let sink = SmtpSink::start(&SinkOpts {
        starttls: Some((ca.cert.clone(), ca.key.clone())),
        auth: Some(("alice".into(), SMTP_PASSWORD.into())),
        ..SinkOpts::default()
    });
    // Secrets live outside the state directory, as in a real deployment.
    let secrets = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &str| {
        let p = secrets.path().join(name);
        crate::util::write_private(&p, v);
        p
    };
    let admin_file = write("admin", &admin);
    let smtp_file = write("smtp", SMTP_PASSWORD);
    let hook_file = write("hook", HOOK_SECRET);
    let env = apps.path().join(".env");
    crate::util::write_private(&env, &format!("WHATSAPP_ACCESS_TOKEN={old}\n"));
    let (argv_file, env_file) = (apps.path().join("argv"), apps.path().join("environ"));

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(uri.to_string());
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = listener.local_addr().unwrap().port();
    let hook = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let metrics_port = crate::util::free_port();
    let tail = format!(
        "attempts = 1\ntimeout = \"5s\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\n\
         [email]\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\nusername = \"alice\"\n\
         password = {{ file = \"{}\" }}\nca_file = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"oncall@example.com\"]\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        sink.port,
        smtp_file.display(),
        ca.ca_cert.display()
    );
    let extra = format!(
        r#"source = "mint"
mint = {{ system_user_id = "{su}", admin_token = {{ file = "{admin}" }} }}
revoke_after = "0s"
[[token.target]]
name = "env"
kind = "dotenv"
path = "{env}"
# Both print the env file, as careless scripts do (issue 14, point 6).
reload = ["/bin/sh", "-c", "cat {env}; cat {env} >&2"]
verify_command = ["/bin/sh", "-c", "cat {env}; cat {env} >&2"]
[[token.target]]
name = "pos"
kind = "webhook"
url = "http://127.0.0.1:{hook_port}/hook?key={URL_CANARY}"
secret = {{ file = "{hook}" }}
[[token.target]]
name = "worker"
kind = "exec"
command = ["/bin/sh", "-c", "cat >/dev/null; echo \"$0 $*\" > {argv}; env > {environ}"]
"#,
        su = sandbox::DEMO_SYSTEM_USER_ID,
        admin = admin_file.display(),
        env = env.display(),
        hook = hook_file.display(),
        argv = argv_file.display(),
        environ = env_file.display(),
    );
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
        &tail,
    );
    let state_dir = ws.config.parent().unwrap().to_path_buf();
    // The first phone read is refused by an error that quotes the whole request back (token,
    // proof, Authorization, encoded forms): it becomes the verdict, the state, the audit
    // record and the CRITICAL email's reason, each of which must carry none of it
    // (issue 14, point 5). The rotation that follows reads the phone normally.
    sb.add_fault(Fault::Echo {
        endpoint: Endpoint::Phone,
        count: 1,
        code: 100,
    });
    let child = crate::util::daemon_command(&ws.config)
        .env("TOKENWARDEN_LOG", "tokenwarden=trace,debug")
        .spawn()
        .unwrap();
    // The first check finds the token due, rotates it and revokes the old one.
    let audit = state_dir.join("audit.jsonl");
    for _ in 0..200 {
        if std::fs::read_to_string(&audit).is_ok_and(|a| a.contains("\"verify_revoked\"")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for _ in 0..100 {
        if !sink.messages().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let scrape = crate::util::scrape_text(metrics_port).await;
    crate::util::signal(child.id(), "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    hook.abort();
    assert!(out.status.success(), "{out:?}");

    let new = crate::util::current(&ws, "prod").await;
    assert_ne!(new, old, "the run rotated the token");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("WHATSAPP_ACCESS_TOKEN={new}\n")
    );
    assert!(!sink.messages().is_empty(), "an email went out");
    assert!(
        seen.lock().unwrap().iter().any(|u| u.contains(URL_CANARY)),
        "the webhook was called"
    );

    // Everything tokenwarden wrote or said, except the files meant to hold secrets.
    let mut outputs: Vec<(String, String)> = vec![
        ("stdout".into(), String::from_utf8_lossy(&out.stdout).into()),
        (
            "stderr (trace logs)".into(),
            String::from_utf8_lossy(&out.stderr).into(),
        ),
        ("metrics".into(), scrape),
        (
            "child argv".into(),
            std::fs::read_to_string(&argv_file).unwrap(),
        ),
        (
            "child environment".into(),
            std::fs::read_to_string(&env_file).unwrap(),
        ),
    ];
    for (_, raw) in sink.messages() {
        outputs.push(("email".into(), raw));
    }
    // `config check` (the unit's `ExecStartPre`, so the journal) on a config with the token
    // pasted into an id field (issue 14, point 8).
    let pasted = secrets.path().join("pasted.toml");
    crate::util::write_private(
        &pasted,
        &std::fs::read_to_string(&ws.config).unwrap().replacen(
            &format!("waba_id = \"{}\"", sandbox::DEMO_WABA_ID),
            &format!("waba_id = \"{new}\""),
            1,
        ),
    );
    let check = crate::util::run(
        &["--config", pasted.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(check.code, 78, "{check:?}");
    assert!(
        check.all().contains("waba_id") && check.all().contains("fingerprint"),
        "{check:?}"
    );
    outputs.push(("config check".into(), check.all()));
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        audit_text.contains("Invalid request"),
        "the echoing error was met and recorded: {audit_text}"
    );

    // An SMTP server that answers AUTH by quoting it back (the password in base64 and as is),
    // met by a second rotation's email (issue 14, point 7): the error, the log and the
    // outbox's record of it carry none of it.
    let echo = SmtpSink::start(&SinkOpts {
        starttls: Some((ca.cert.clone(), ca.key.clone())),
        auth: Some(("alice".into(), SMTP_PASSWORD.into())),
        echo_auth: true,
        ..SinkOpts::default()
    });
    let echo_config = secrets.path().join("echo.toml");
    crate::util::write_private(
        &echo_config,
        &std::fs::read_to_string(&ws.config).unwrap().replacen(
            &format!("port = {}", sink.port),
            &format!("port = {}", echo.port),
            1,
        ),
    );
    let again = crate::util::run_with_stdin(
        &[
            "--config",
            echo_config.to_str().unwrap(),
            "rotate",
            "--token",
            "prod",
        ],
        &[("TOKENWARDEN_LOG", "tokenwarden=trace,debug")],
        None,
    );
    assert!(echo.messages().is_empty(), "AUTH was refused: {again:?}");
    assert!(
        again.all().contains("535"),
        "the refusal was met and reported: {again:?}"
    );
    outputs.push(("rotate with an AUTH-echoing server".into(), again.all()));
    let newer = crate::util::current(&ws, "prod").await;
    let holders = [
        ws.store.clone(),
        state_dir.join("app-secret"),
        ws.config.clone(),
    ];
    let smtp_b64 = tokenwarden::scrub::base64(format!("\0alice\0{SMTP_PASSWORD}").as_bytes());
    for (path, text) in files(&state_dir) {
        if !holders.contains(&path) {
            outputs.push((path.display().to_string(), text));
        }
    }
    let canaries = [
        old.as_str(),
        new.as_str(),
        newer.as_str(),
        admin.as_str(),
        smtp_b64.as_str(),
        sandbox::DEMO_APP_SECRET,
        SMTP_PASSWORD,
        HOOK_SECRET,
        URL_CANARY,
    ];
    let mut hits = Vec::new();
    for (what, text) in &outputs {
        for c in canaries {
            if text.contains(c) {
                hits.push(format!("{what} holds {}…", &c[..8]));
            }
        }
    }
    println!(
        "canary: {} outputs searched for {} canaries, {} hits",
        outputs.len(),
        canaries.len(),
        hits.len()
    );
    assert!(hits.is_empty(), "{hits:#?}");
    assert!(
        outputs.len() >= 10,
        "the search covered the state directory too"
    );

    // Files that hold tokens are private.
    use std::os::unix::fs::PermissionsExt;
    for p in [ws.store.clone(), env.clone()] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
}
