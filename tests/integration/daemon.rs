//! The daemon against the Graph sandbox and a real SMTP server on loopback. Time moves by the
//! sandbox's clock and the daemon's `OffsetClock` together, never by sleeping.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenwarden::daemon::{self, Control, OffsetClock};
use tokenwarden::sandbox::{self, Endpoint, Fault, Sandbox, Scenario, TokenSpec};
use tokio::sync::{mpsc, oneshot};

use crate::util::{SinkOpts, SmtpSink, TokenEntry, Workspace, assert_no_leak};

const DAY: i64 = 86_400;

/// A daemon running in this process.
struct Running {
    ctl: mpsc::Sender<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
}

impl Running {
    fn start(config: &Path, clock: &OffsetClock) -> Running {
        let (ctl, rx) = mpsc::channel(8);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::run(
            config.to_path_buf(),
            Arc::new(clock.clone()),
            rx,
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            ctl,
            stop: Some(stop),
            task,
        }
    }

    async fn check_now(&self) {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::CheckNow(tx)).await.unwrap();
        rx.await.unwrap();
    }

    async fn evaluate(&self) {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Evaluate(tx)).await.unwrap();
        rx.await.unwrap();
    }

    async fn reload(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Reload(Some(tx))).await.unwrap();
        rx.await.unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `[meta]` tail plus daemon sections: no scheduled checks during the test (checks happen on
/// `check_now`), plain SMTP to the sink's port, thresholds from Meta's expiry only.
fn sections(smtp_port: u16, extra_alerts: &str) -> String {
    format!(
        "attempts = 1\ntimeout = \"5s\"\n\
         [schedule]\ncron = \"0 0 0 1 1 *\"\n\
         [alerts]\nmax_age = \"never\"\n{extra_alerts}\n\
         [email]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
         from = \"tokenwarden <tw@example.com>\"\nto = [\"oncall@example.com\", \"backup@example.com\"]\ntimeout = \"5s\"\n"
    )
}

/// The Subject of every message, unfolded (long headers wrap onto indented lines).
fn subjects(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .map(|(_, raw)| {
            let mut lines = raw.lines().skip_while(|l| !l.starts_with("Subject: "));
            let mut subject = lines
                .next()
                .unwrap_or("")
                .trim_start_matches("Subject: ")
                .to_string();
            for cont in lines.take_while(|l| l.starts_with(' ') || l.starts_with('\t')) {
                subject.push(' ');
                subject.push_str(cont.trim());
            }
            subject
        })
        .collect()
}

/// Whether `subject` says `want`. The clocks keep running between a step to exactly N days
/// before expiry and the email's rendering, and a span is rounded down, so a second boundary
/// in between makes "7 days" read "6 days": both are accepted, nothing else.
fn says(subject: &str, want: &str) -> bool {
    if subject.contains(want) {
        return true;
    }
    let Some(at) = want.find("expires in ") else {
        return false;
    };
    let rest = &want[at + "expires in ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(n) = digits.parse::<u32>() else {
        return false;
    };
    let one_less = format!(
        "{}expires in {}{}",
        &want[..at],
        n - 1,
        &rest[digits.len()..]
    );
    subject.contains(&one_less)
}

/// Moves both clocks so that `left` seconds remain before `expires_at`.
fn step_to(sb: &Sandbox, clock: &OffsetClock, expires_at: i64, left: i64) {
    let delta = (expires_at - left) - sb.now();
    sb.advance_clock(delta);
    clock.advance(delta);
}

fn expiry_of(sb: &Sandbox) -> i64 {
    // A 60-day token's expiry, as the sandbox sets it: 60 days on, rounded up to the hour.
    let t = sb.now() + 60 * DAY;
    (t + 3599) / 3600 * 3600
}

fn state_dir(config: &Path) -> PathBuf {
    config.parent().unwrap().to_path_buf()
}

#[tokio::test]
async fn thresholds_are_emailed_in_order_each_once_then_recovery() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let expires = expiry_of(&sb);
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("billbytekot-prod", &token)],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);

    let mut seen = 0;
    for (left, want) in [
        (15 * DAY, None),
        (
            7 * DAY,
            Some("[tokenwarden] WARNING billbytekot-prod: WhatsApp token expires in 7 days"),
        ),
        (7 * DAY - 3600, None),
        (
            3 * DAY,
            Some("[tokenwarden] WARNING billbytekot-prod: WhatsApp token expires in 3 days"),
        ),
        (
            DAY,
            Some("[tokenwarden] CRITICAL billbytekot-prod: WhatsApp token expires in 24 hours"),
        ),
        (DAY - 3600, None),
        (
            0,
            Some("[tokenwarden] EXPIRED billbytekot-prod: WhatsApp token expired"),
        ),
        (-3600, None),
    ] {
        step_to(&sb, &clock, expires, left);
        d.check_now().await;
        d.evaluate().await;
        let got = subjects(&sink);
        match want {
            Some(w) => {
                assert_eq!(got.len(), seen + 1, "at {left}s left: {got:#?}");
                assert!(says(&got[seen], w), "at {left}s left: {:?}", got[seen]);
                seen += 1;
            }
            None => assert_eq!(got.len(), seen, "nothing new at {left}s left: {got:#?}"),
        }
    }
    // Expired repeats after repeat_interval (24 h), not before.
    step_to(&sb, &clock, expires, -DAY - 60);
    d.check_now().await;
    assert_eq!(subjects(&sink).len(), seen + 1, "{:#?}", subjects(&sink));
    seen += 1;

    // A person puts a new token in place: one recovery email.
    let fresh = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    tokenwarden::store::file::FileStore::new(ws.store.clone(), "billbytekot-prod".into())
        .import_current(
            &tokenwarden::secret::Secret::new(fresh.clone()),
            jiff::Timestamp::now(),
        )
        .unwrap();
    d.check_now().await;
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), seen + 1, "{got:#?}");
    assert!(
        got[seen].starts_with("[tokenwarden] RESOLVED billbytekot-prod"),
        "{got:#?}"
    );

    // Every message: two recipients, threaded by token, multipart, no secret anywhere.
    let msgs = sink.messages();
    let thread: Vec<&str> = msgs
        .iter()
        .map(|(_, raw)| {
            raw.lines()
                .find(|l| l.starts_with("References:"))
                .unwrap_or("")
        })
        .collect();
    assert!(
        thread.iter().all(|t| !t.is_empty() && *t == thread[0]),
        "{thread:?}"
    );
    for (env, raw) in &msgs {
        assert_eq!(env["rcpt_tos"].as_array().unwrap().len(), 2);
        assert!(raw.contains("text/plain") && raw.contains("text/html"));
        assert_no_leak(raw, &[&token, &fresh, sandbox::DEMO_APP_SECRET], "an email");
    }
    let mut on_disk = String::new();
    for f in walk(&state_dir(&ws.config)) {
        if f.file_name().unwrap() != "tokens.json" && f.file_name().unwrap() != "app-secret" {
            on_disk.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
        }
    }
    let audit = std::fs::read_to_string(state_dir(&ws.config).join("audit.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |e: &str| events.iter().filter(|v| v["event"] == e).count();
    assert!(count("check") >= 10, "{audit}");
    assert_eq!(count("email_queued"), seen + 1, "{audit}");
    assert_eq!(count("email_sent"), seen + 1, "{audit}");
    assert!(
        events
            .iter()
            .filter(|v| v["event"] == "check")
            .all(|v| v["fingerprint"].is_string()),
        "{audit}"
    );
    assert_no_leak(
        &on_disk,
        &[&token, &fresh, sandbox::DEMO_APP_SECRET],
        "state and outbox files",
    );
    d.stop().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[tokio::test]
async fn smtp_down_then_up_delivers_every_email_once_across_a_restart() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    // "Down" is a port held by a listener that never answers: unlike a freed port, no other
    // test's server can take it meanwhile. Connections hang until the email timeout (1 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let expires = expiry_of(&sb);
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let meta = sections(port, "").replace(
        "backup@example.com\"]\ntimeout = \"5s\"",
        "backup@example.com\"]\ntimeout = \"1s\"",
    );
    assert!(meta.contains("timeout = \"1s\""));
    let ws = Workspace::with_meta(&sb, &[TokenEntry::new("prod", &token)], &meta);
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    step_to(&sb, &clock, expires, 7 * DAY);
    d.check_now().await; // SMTP is down: the warning waits in the outbox.
    step_to(&sb, &clock, expires, 3 * DAY);
    d.check_now().await;
    let outbox = state_dir(&ws.config).join("outbox");
    let queued = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .count();
    assert_eq!(queued, 2, "both warnings are kept");
    // The daemon restarts while SMTP is still down: nothing is lost.
    d.stop().await;
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    drop(silent);
    let sink = SmtpSink::start(&SinkOpts {
        port: Some(port),
        ..SinkOpts::default()
    });
    clock.advance(2 * 3600); // past the outbox's backoff
    sb.advance_clock(2 * 3600);
    d.evaluate().await;
    d.evaluate().await;
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        says(&got[0], "expires in 7 days") && says(&got[1], "expires in 3 days"),
        "{got:#?}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_single_failure_never_alerts_but_a_persistent_one_says_cannot_check() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        &sections(sink.port, "cannot_check_after = \"2h\""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    sb.add_fault(Fault::server_error(Endpoint::DebugToken, 503, 2));
    d.check_now().await;
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 6000));
    d.check_now().await;
    sb.add_fault(Fault::html(Endpoint::DebugToken));
    d.check_now().await;
    assert!(
        subjects(&sink).is_empty(),
        "transient failures alone never alert: {:#?}",
        subjects(&sink)
    );
    clock.advance(3 * 3600);
    sb.add_fault(Fault::html(Endpoint::DebugToken));
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("[tokenwarden] UNKNOWN prod: cannot check the WhatsApp token for"),
        "{got:#?}"
    );
    assert!(!got[0].contains("INVALID") && !got[0].contains("EXPIRED"));
    // Graph answers again: one recovery.
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[1].contains("RESOLVED"), "{got:#?}");
    d.stop().await;
}

#[tokio::test]
async fn a_reset_app_secret_sends_the_credentials_email_and_never_rotates() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    sb.reset_app_secret("0123456789abcdef0123456789abcdef");
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(
        got,
        vec![
            "[tokenwarden] CONFIG prod: Meta refused tokenwarden's own app credentials".to_string()
        ]
    );
    let body = &sink.messages()[0].1;
    assert!(body.contains("App settings > Basic"), "{body}");
    let stats = sb.stats();
    assert_eq!((stats.refreshed, stats.minted, stats.revoked), (0, 0, 0));
    d.stop().await;
}

#[tokio::test]
async fn a_broken_config_on_reload_is_refused_and_the_old_one_keeps_running() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let good = std::fs::read_to_string(&ws.config).unwrap();
    crate::util::write_private(
        &ws.config,
        &good.replace("[alerts]", "[alerts]\ncolour = \"red\""),
    );
    let e = d.reload().await.unwrap_err();
    assert!(e.contains("colour"), "{e}");
    d.check_now().await; // still running on the old config
    crate::util::write_private(&ws.config, &good);
    d.reload().await.unwrap();
    d.stop().await;
}

/// The real binary, real clock: a warning arrives, a SIGKILL and restart does not repeat it,
/// `status` shows it, SIGTERM stops cleanly, and no token reaches stdout or stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_survives_sigkill_without_repeating_and_stops_on_sigterm() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(
        TokenSpec::system_user_60d()
            .wabas(&[sandbox::DEMO_WABA_ID])
            .expiring_in(2 * DAY + 600),
    );
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        &sections(sink.port, ""),
    );
    let spawn = |cfg: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
            .args(["--config", cfg.to_str().unwrap(), "run"])
            .env("TOKENWARDEN_LOG", "tokenwarden=debug,warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_for = |n: usize| {
        for _ in 0..100 {
            if sink.messages().len() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("expected {n} emails, got {:#?}", subjects(&sink));
    };
    let mut first = spawn(&ws.config);
    tokio::task::block_in_place(|| wait_for(1));
    // Kill once the daemon has recorded the delivery (the audit log says so). A kill between
    // the server's 250 and that record is the one window SMTP leaves: the email would go again,
    // with the same Message-ID, which mail clients fold into one.
    let audit = state_dir(&ws.config).join("audit.jsonl");
    tokio::task::block_in_place(|| {
        for _ in 0..100 {
            if std::fs::read_to_string(&audit).is_ok_and(|a| a.contains("\"email_sent\"")) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the delivery was never recorded");
    });
    first.kill().unwrap();
    let out1 = first.wait_with_output().unwrap();
    assert!(
        subjects(&sink)[0]
            .starts_with("[tokenwarden] WARNING prod: WhatsApp token expires in 2 days"),
        "{:#?}",
        subjects(&sink)
    );

    let second = spawn(&ws.config);
    // Wait until the restarted daemon has checked (its state's last_check moves on).
    let before = std::fs::read_to_string(state_dir(&ws.config).join("state.json")).unwrap();
    tokio::task::block_in_place(|| {
        for _ in 0..100 {
            if std::fs::read_to_string(state_dir(&ws.config).join("state.json")).unwrap() != before
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let status = crate::util::run(&["--config", ws.config.to_str().unwrap(), "status"], &[]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("WARNING prod") && status.stdout.contains("last email"),
        "{status:?}"
    );
    // SIGHUP reloads (the daemon logs it and checks again), SIGTERM stops it cleanly.
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &second.id().to_string()])
        .status();
    let reloaded = state_dir(&ws.config).join("state.json");
    let before = std::fs::read_to_string(&reloaded).unwrap();
    tokio::task::block_in_place(|| {
        for _ in 0..100 {
            if std::fs::read_to_string(&reloaded).unwrap() != before {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let out2 = tokio::task::block_in_place(|| second.wait_with_output().unwrap());
    assert_eq!(
        out2.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    assert_eq!(
        sink.messages().len(),
        1,
        "no repeat after the restart: {:#?}",
        subjects(&sink)
    );
    let logs = format!(
        "{}{}{}{}",
        String::from_utf8_lossy(&out1.stdout),
        String::from_utf8_lossy(&out1.stderr),
        String::from_utf8_lossy(&out2.stdout),
        String::from_utf8_lossy(&out2.stderr)
    );
    assert!(logs.contains("alert queued"), "{logs}");
    assert!(
        logs.contains("configuration reloaded"),
        "SIGHUP reloads: {logs}"
    );
    assert!(
        logs.contains("shutting down"),
        "SIGTERM stops cleanly: {logs}"
    );
    assert_no_leak(&logs, &[&token, sandbox::DEMO_APP_SECRET], "daemon logs");
}

/// Parses a scrape with the Prometheus reference parser (prometheus_client, in the venv).
fn parse_metrics(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/parse_metrics.py");
    let mut child = std::process::Command::new(crate::util::venv().join("bin/python"))
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid Prometheus text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_token_and_healthz_fails_while_the_loop_is_blocked() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let soon = sb.issue_token(
        TokenSpec::system_user_60d()
            .wabas(&[sandbox::DEMO_WABA_ID])
            .expiring_in(3 * DAY - 600),
    );
    let later = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let port = crate::util::free_port();
    let extra = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\nstall_after = \"1s\"\n",
        sections(sink.port, "")
    );
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("soon", &soon),
            TokenEntry::new("later", &later),
        ],
        &extra,
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let base = format!("http://127.0.0.1:{port}");
    let scrape = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_metrics(&scrape);
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{scrape}"))
    };
    for token in ["soon", "later"] {
        assert!(
            value(
                "tokenwarden_token_expiry_timestamp_seconds",
                &[("token", token)]
            ) > 1.7e9
        );
        assert!(
            value(
                "tokenwarden_token_last_success_timestamp_seconds",
                &[("token", token)]
            ) > 1.7e9
        );
        assert_eq!(
            value("tokenwarden_token_check_errors", &[("token", token)]),
            0.0
        );
    }
    assert_eq!(
        value(
            "tokenwarden_token_state",
            &[("token", "soon"), ("state", "warning")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tokenwarden_token_state",
            &[("token", "later"), ("state", "ok")]
        ),
        1.0
    );
    assert_eq!(value("tokenwarden_emails_sent_total", &[]), 1.0);
    assert_eq!(value("tokenwarden_emails_queued", &[]), 0.0);
    for result in ["completed", "rejected", "failed", "superseded"] {
        assert_eq!(
            value("tokenwarden_rotations_total", &[("result", result)]),
            0.0,
            "staged tokens with nothing staged never rotate"
        );
    }
    assert_no_leak(
        &scrape,
        &[&soon, &later, sandbox::DEMO_APP_SECRET],
        "metrics",
    );
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Block the loop in a slow Graph call: /healthz must notice within stall_after.
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 3000).times(2));
    let ctl = d.ctl.clone();
    let blocked = tokio::spawn(async move {
        let (tx, rx) = oneshot::channel();
        ctl.send(Control::CheckNow(tx)).await.unwrap();
        rx.await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        503
    );
    blocked.await.unwrap();
    d.evaluate().await;
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    d.stop().await;
}

#[tokio::test]
async fn at_its_rotation_time_a_minted_successor_takes_over_and_the_old_token_is_revoked_after_the_grace()
 {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let expires = expiry_of(&sb);
    let old = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = crate::util::mint_source(&sb, dir.path(), sandbox::DEMO_SYSTEM_USER_ID);
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&old),
            extra: &extra,
        }],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    let current = || async {
        use tokenwarden::store::SecretStore;
        tokenwarden::store::file::FileStore::new(ws.store.clone(), "billbytekot-prod".into())
            .current()
            .await
            .unwrap()
            .expose()
            .to_string()
    };

    // A 60-day token rotates when a third of its life is left: 20 days before its expiry.
    step_to(&sb, &clock, expires, 20 * DAY + 3600);
    d.check_now().await;
    assert_eq!(sb.stats().minted, 0, "not due yet");
    step_to(&sb, &clock, expires, 20 * DAY - 60);
    d.check_now().await;
    assert_eq!(sb.stats().minted, 1);
    let new = current().await;
    assert_ne!(new, old);
    assert_eq!(
        sb.stats().revoked,
        0,
        "the old token lives through the grace period"
    );

    // 24 hours later the next check revokes it.
    sb.advance_clock(DAY + 60);
    clock.advance(DAY + 60);
    d.check_now().await;
    assert_eq!(sb.stats().revoked, 1);
    d.check_now().await;
    assert_eq!(
        (sb.stats().minted, sb.stats().revoked),
        (1, 1),
        "nothing more to do"
    );
    d.stop().await;

    let subjects = subjects(&sink);
    let rotated: Vec<&String> = subjects.iter().filter(|s| s.contains("ROTATED")).collect();
    assert_eq!(rotated.len(), 1, "{subjects:?}");
    assert!(
        subjects
            .iter()
            .all(|s| !s.contains("WARNING") && !s.contains("FAILED")),
        "{subjects:?}"
    );
    let status = std::fs::read_to_string(state_dir(&ws.config).join("state.json")).unwrap();
    let fp = tokenwarden::secret::Secret::new(new.clone())
        .fingerprint()
        .to_string();
    assert!(status.contains(&fp), "the state describes the new token");
    for (_, raw) in sink.messages() {
        assert_no_leak(&raw, &[&old, &new, &admin], "rotation email");
    }
}

#[tokio::test]
async fn a_refused_mint_sends_one_failure_email_and_waits_before_trying_again() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let expires = expiry_of(&sb);
    let old = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    // The system user does not have the app installed: Meta refuses every mint.
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) =
        crate::util::mint_source(&sb, dir.path(), sandbox::UNINSTALLED_SYSTEM_USER_ID);
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&old),
            extra: &extra,
        }],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    step_to(&sb, &clock, expires, 19 * DAY);
    d.check_now().await;
    d.check_now().await;
    let failed: Vec<String> = subjects(&sink)
        .into_iter()
        .filter(|s| s.contains("ROTATION FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", subjects(&sink));
    assert!(failed[0].contains("obtain failed"), "{failed:?}");
    let (_, raw) = sink
        .messages()
        .into_iter()
        .find(|(_, raw)| raw.contains("ROTATION FAILED"))
        .unwrap();
    assert!(raw.contains("App not installed"), "the email says why");
    assert!(
        raw.contains("tokenwarden rotate --token billbytekot-prod"),
        "and what to do"
    );
    assert_no_leak(&raw, &[&old, &admin], "failure email");

    // The next day it tries again, and says so again.
    step_to(&sb, &clock, expires, 18 * DAY - 60);
    d.check_now().await;
    d.stop().await;
    let failed = subjects(&sink)
        .into_iter()
        .filter(|s| s.contains("ROTATION FAILED"))
        .count();
    assert_eq!(failed, 2, "{:?}", subjects(&sink));
    use tokenwarden::store::SecretStore;
    let current =
        tokenwarden::store::file::FileStore::new(ws.store.clone(), "billbytekot-prod".into())
            .current()
            .await
            .unwrap();
    assert_eq!(current.expose(), old, "the old token stays current");
}

#[tokio::test]
async fn the_scheduled_check_syncs_a_new_target_and_repairs_one_changed_behind_its_back() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let apps = tempfile::tempdir().unwrap();
    let env = apps.path().join(".env");
    let original = "# backend\nWHATSAPP_ACCESS_TOKEN=EAAGrestoredfrombackup\nPORT=8080\n";
    crate::util::write_private(&env, original);
    let extra = format!(
        "[[token.target]]\nname = \"backend-env\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
        env.display()
    );
    let port = crate::util::free_port();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&token),
            extra: &extra,
        }],
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            sections(sink.port, "")
        ),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    // The first check brings the new target up to the current token: a sync, no email.
    d.check_now().await;
    let synced = original.replace("EAAGrestoredfrombackup", &token);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), synced);
    let scrape = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = parse_metrics(&scrape);
    let pushed = samples.iter().find(|s| {
        s["name"] == "tokenwarden_target_last_push_success"
            && s["labels"]["target"] == "backend-env"
    });
    assert_eq!(
        pushed.and_then(|s| s["value"].as_f64()),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        samples.iter().any(
            |s| s["name"] == "tokenwarden_target_last_push_timestamp_seconds"
                && s["value"].as_f64().unwrap_or(0.0) > 1.7e9
        ),
        "{scrape}"
    );
    assert!(subjects(&sink).is_empty(), "{:?}", subjects(&sink));
    // Someone restores an old backup: the next check repairs it and tells on-call.
    crate::util::write_private(&env, original);
    d.check_now().await;
    assert_eq!(std::fs::read_to_string(&env).unwrap(), synced);
    d.check_now().await;
    d.stop().await;
    let subjects = subjects(&sink);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(
        subjects[0].contains("DRIFT billbytekot-prod"),
        "{subjects:?}"
    );
    let audit = std::fs::read_to_string(state_dir(&ws.config).join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"drifted\":[[\"backend-env\""), "{audit}");
    for (_, raw) in sink.messages() {
        assert_no_leak(&raw, &[&token], "drift email");
    }
    assert_no_leak(&audit, &[&token], "audit");
}

/// Regression: the signal handlers were installed only once the main loop first polled them,
/// so a SIGTERM during the first check (which may be a rotation) killed the process outright.
/// Since issue 14 (point 2) the check is abandoned rather than waited for: it only reads, and
/// a Graph that hangs must not hold up a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_first_check_abandons_it_and_exits_cleanly() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 1500));
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        "attempts = 1\ntimeout = \"5s\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["--config", ws.config.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Nothing of the abandoned check is recorded as if it had run.
    let state =
        std::fs::read_to_string(state_dir(&ws.config).join("state.json")).unwrap_or_default();
    assert!(
        !state.contains("\"healthy\""),
        "the check was abandoned: {state}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("abandoning the check in progress"),
        "{stderr}"
    );
}

/// The check and email path, stopped hard at each step and restarted: the warning reaches
/// on-call once. The one exception is the window SMTP leaves (after the server's 250, before
/// the outbox records it): the email goes again with the same Message-ID, which mail clients
/// fold into one.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_and_email_path_killed_at_each_step_alerts_once() {
    let points = [
        "daemon.after_observe",
        "daemon.after_enqueue",
        "daemon.after_save",
        "outbox.after_send",
        "outbox.after_mark",
    ];
    let mut survived = 0;
    for point in points {
        let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
            .await
            .unwrap();
        let sink = SmtpSink::start(&SinkOpts::default());
        let token = sb.issue_token(
            TokenSpec::system_user_60d()
                .wabas(&[sandbox::DEMO_WABA_ID])
                .expiring_in(2 * DAY + 600),
        );
        let ws = Workspace::with_meta(
            &sb,
            &[TokenEntry::new("prod", &token)],
            &sections(sink.port, ""),
        );
        let run = |fp: Option<&str>| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
            cmd.args(["--config", ws.config.to_str().unwrap(), "run"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            if let Some(fp) = fp {
                cmd.env(tokenwarden::failpoint::ENV, fp);
            }
            cmd.spawn().unwrap()
        };
        let crashed = run(Some(point));
        let out = tokio::task::spawn_blocking(move || crashed.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(!out.status.success(), "{point}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")),
            "{point}: {out:?}"
        );
        let second = run(None);
        let audit = state_dir(&ws.config).join("audit.jsonl");
        for _ in 0..100 {
            let sent = std::fs::read_to_string(&audit)
                .map(|a| a.matches("\"email_sent\"").count())
                .unwrap_or(0);
            if sent >= 1 || (point == "outbox.after_mark" && !sink.messages().is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        std::process::Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status()
            .unwrap();
        let out = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{point}: {out:?}");
        let warnings: Vec<String> = subjects(&sink)
            .into_iter()
            .filter(|s| s.contains("WARNING prod"))
            .collect();
        let ids: std::collections::BTreeSet<String> = sink
            .messages()
            .iter()
            .filter_map(|(_, raw)| {
                raw.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                    .map(|l| l.to_string())
            })
            .collect();
        if point == "outbox.after_send" {
            assert_eq!(warnings.len(), 2, "{point}: {warnings:?}");
            assert_eq!(ids.len(), 1, "{point}: the same Message-ID twice: {ids:?}");
        } else {
            assert_eq!(warnings.len(), 1, "{point}: {warnings:?}");
        }
        survived += 1;
    }
    println!(
        "{} crash points in check and email, {survived} survived",
        points.len()
    );
}

/// An SMTP relay that is down: its port stays held, so no other test's server can take it, and
/// every connection is closed before the greeting (a relay stopped behind its load balancer).
/// It fails fast, unlike a port that never answers, so a day of retries costs no real time.
struct SmtpDown {
    port: u16,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl SmtpDown {
    fn start() -> SmtpDown {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, s) = (connections.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(conn);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        SmtpDown {
            port,
            connections,
            stop,
            thread,
        }
    }

    /// Frees the port (the listener goes with the thread) and says how many connections came.
    fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap();
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Every `Message-ID` the sink received, in arrival order.
fn message_ids(sink: &SmtpSink) -> Vec<String> {
    sink.messages()
        .iter()
        .filter_map(|(_, raw)| {
            raw.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .map(|l| l.to_string())
        })
        .collect()
}

/// One scrape of `/metrics`, parsed with the reference parser.
async fn scrape(port: u16) -> Vec<serde_json::Value> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse_metrics(&text)
}

/// The value of the first sample named `name`, if any.
fn sample(samples: &[serde_json::Value], name: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["value"].as_f64())
}

/// Issue #7: SMTP unreachable for a whole day while the daemon keeps checking. Every email
/// decided meanwhile stays in the outbox (none dropped, no give-up), retries back off but
/// never wait longer than the cap, `/metrics` shows the backlog and its age, and once a real
/// server is back every email arrives exactly once within one cap.
#[tokio::test]
async fn smtp_down_for_a_day_keeps_every_email_and_delivers_each_once_within_the_cap() {
    use std::collections::BTreeMap;
    use tokenwarden::daemon::Clock;
    use tokenwarden::notify::{BACKOFF_CAP, Outbox};

    const HOUR: i64 = 3600;
    const STEP: i64 = 600;
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let down = SmtpDown::start();
    let smtp_port = down.port;
    let spec = || TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]);
    // During the day: `a` crosses 3 days left (hour 6.5), `b` 1 day left (hour 18.5), `c` is
    // invalidated by Meta (hour 12). At the start `a` and `b` are already past 7 and 3 days.
    let a = sb.issue_token(spec().expiring_in(3 * DAY + 6 * HOUR + HOUR / 2));
    let b = sb.issue_token(spec().expiring_in(DAY + 18 * HOUR + HOUR / 2));
    let c = sb.issue_token(spec());
    let metrics_port = crate::util::free_port();
    let meta = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        sections(smtp_port, "")
    );
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("a", &a),
            TokenEntry::new("b", &b),
            TokenEntry::new("c", &c),
        ],
        &meta,
    );
    let outbox = Outbox::open(&state_dir(&ws.config)).unwrap();
    let clock = OffsetClock::default();
    let advance = |secs: i64| {
        sb.advance_clock(secs);
        clock.advance(secs);
    };
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let start = clock.now();

    // The day: a check every hour, the loop's own wake-ups every 10 minutes in between.
    let mut queued: BTreeMap<String, String> = BTreeMap::new(); // id -> subject
    let mut tries: BTreeMap<String, Vec<i64>> = BTreeMap::new(); // id -> when attempts grew
    let mut last_attempts: BTreeMap<String, u32> = BTreeMap::new();
    let mut farthest_retry = 0; // the longest a queued email was told to wait, seconds
    let mut last_error = String::new();
    for step in 1..=(DAY / STEP) {
        advance(STEP);
        if step * STEP == 12 * HOUR {
            sb.invalidate(&c, 460);
        }
        if step % (HOUR / STEP) == 0 {
            d.check_now().await;
        } else {
            d.evaluate().await;
        }
        let now = clock.now();
        let pending = outbox.pending().unwrap();
        for e in &pending {
            queued
                .entry(e.email.id.clone())
                .or_insert_with(|| e.email.subject.clone());
            let before = last_attempts.insert(e.email.id.clone(), e.attempts);
            if before != Some(e.attempts) && e.attempts > 0 {
                tries
                    .entry(e.email.id.clone())
                    .or_default()
                    .push(now.as_second() - start.as_second());
            }
            if let Some(next) = e.next_attempt {
                farthest_retry = farthest_retry.max(next.as_second() - now.as_second());
            }
            if let Some(err) = &e.last_error {
                last_error = err.clone();
            }
        }
        // Nothing ever leaves the outbox while the server is down.
        assert_eq!(
            pending.len(),
            queued.len(),
            "hour {}: an email left the outbox undelivered",
            step * STEP / HOUR
        );
    }
    let subjects_queued: Vec<&String> = queued.values().collect();
    assert!(
        queued.len() >= 5,
        "7-day and 3-day warnings at the start, the 3-day and 1-day crossings, the invalidation: {subjects_queued:#?}"
    );
    for want in ["WARNING a", "WARNING b", "CRITICAL b", "INVALID c"] {
        assert!(
            subjects_queued.iter().any(|s| s.contains(want)),
            "{want}: {subjects_queued:#?}"
        );
    }
    // Backoff, capped: the retry is never further away than the cap, and the first email was
    // not tried at every wake-up (144) but about once an hour after the first doublings.
    assert!(
        farthest_retry <= BACKOFF_CAP.as_secs() as i64,
        "{farthest_retry}s"
    );
    let oldest_id = outbox.pending().unwrap()[0].email.id.clone();
    let first = &tries[&oldest_id];
    let gaps: Vec<i64> = first.windows(2).map(|w| w[1] - w[0]).collect();
    let longest_gap = gaps.iter().copied().max().unwrap_or(0);
    assert!(
        (20..=40).contains(&first.len()),
        "attempts of the oldest email over the day: {first:?}"
    );
    assert!(
        longest_gap <= BACKOFF_CAP.as_secs() as i64 + STEP,
        "gaps {gaps:?}"
    );
    assert!(
        gaps.iter().take(3).all(|g| *g < 1800) && longest_gap >= 2700,
        "short gaps first, then about an hour: {gaps:?}"
    );

    // What on-call sees: the backlog and its age.
    let m = scrape(metrics_port).await;
    assert_eq!(
        sample(&m, "tokenwarden_emails_queued"),
        Some(queued.len() as f64)
    );
    let oldest = sample(&m, "tokenwarden_outbox_oldest_queued_timestamp_seconds")
        .expect("the oldest email's time is exported") as i64;
    let backlog_age = clock.now().as_second() - oldest;
    assert!(backlog_age >= DAY, "{backlog_age}s");
    assert!(
        sample(&m, "tokenwarden_emails_sent_total") == Some(0.0),
        "nothing sent during the outage"
    );

    // SMTP comes back on the same port: every email within one cap, each once.
    let connections = down.stop();
    let sink = SmtpSink::start(&SinkOpts {
        port: Some(smtp_port),
        ..SinkOpts::default()
    });
    let mut waited = 0;
    while sink.messages().len() < queued.len() && waited < BACKOFF_CAP.as_secs() as i64 {
        advance(60);
        waited += 60;
        d.evaluate().await;
    }
    assert_eq!(
        sink.messages().len(),
        queued.len(),
        "all delivered within {waited}s of SMTP's return: {:#?}",
        subjects(&sink)
    );
    // More checks and wake-ups send nothing again.
    for _ in 0..3 {
        advance(HOUR);
        d.check_now().await;
        d.evaluate().await;
    }
    let mut got = subjects(&sink);
    let mut want: Vec<String> = queued.values().cloned().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each queued email once, nothing else");
    let ids = message_ids(&sink);
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:#?}");
    assert!(outbox.is_empty());
    let m = scrape(metrics_port).await;
    assert_eq!(sample(&m, "tokenwarden_emails_queued"), Some(0.0));
    assert_eq!(
        sample(&m, "tokenwarden_outbox_oldest_queued_timestamp_seconds"),
        None
    );
    assert_eq!(
        sample(&m, "tokenwarden_emails_sent_total"),
        Some(queued.len() as f64)
    );
    println!(
        "SMTP down for {}h: {} emails queued, none dropped; the oldest tried {} times (gaps {}s .. {}s, retry never set further than {}s), {connections} connections to the dead relay; backlog age in /metrics {}h; after SMTP returned all delivered within {waited}s, each once; last error: {last_error}",
        DAY / HOUR,
        queued.len(),
        first.len(),
        gaps.iter().min().unwrap_or(&0),
        longest_gap,
        farthest_retry,
        backlog_age / HOUR,
    );
    d.stop().await;
}

/// Issue #7: Meta rate-limits a check and asks to wait a minute. The daemon does not sit the
/// wait out (that would hold every other token's check and its emails): the check ends at once
/// as "cannot check" with Meta's wait in the verdict, the token is not called dead, one
/// occurrence emails nobody, the other token is checked in the same run, and the next check
/// succeeds once the limit is lifted.
#[tokio::test]
async fn a_long_rate_limit_ends_the_check_at_once_never_alerts_and_the_next_check_succeeds() {
    use std::time::{Duration, Instant};
    use tokenwarden::policy::{State, Verdict};

    const RETRY_AFTER: u64 = 60;
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let spec = || TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]);
    let prod = sb.issue_token(spec());
    let other = sb.issue_token(spec());
    // Retries allowed, so the test shows the wait is not sat out even when a retry would be.
    let meta =
        sections(sink.port, "").replace("attempts = 1\n", "attempts = 3\nretry_delay = \"10ms\"\n");
    assert!(meta.contains("attempts = 3"));
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("prod", &prod),
            TokenEntry::new("other", &other),
        ],
        &meta,
    );
    let state = tokenwarden::state::StateStore::new(&state_dir(&ws.config));
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let mut figures = Vec::new();
    // An app-level limit on the inspecting call, then WhatsApp's throughput limit on the
    // phone-number read; each hits `prod`, checked first, once.
    for (endpoint, code) in [(Endpoint::DebugToken, 4), (Endpoint::Phone, 130429)] {
        sb.add_fault(Fault::RateLimit {
            endpoint,
            count: 1,
            code,
            retry_after_secs: RETRY_AFTER,
        });
        let requests = sb.stats().requests_for(endpoint);
        let started = Instant::now();
        d.check_now().await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(RETRY_AFTER / 4),
            "{endpoint:?}: the check of both tokens took {took:?}, Retry-After {RETRY_AFTER}s"
        );
        assert_eq!(
            sb.stats().requests_for(endpoint) - requests,
            2,
            "{endpoint:?}: the limited call is not sent again within the run"
        );
        let snap = state.load().unwrap();
        let p = &snap.tokens["prod"];
        // Throttled (issue 13, point 7): deferred by Meta's wait, never a verdict on the token.
        match &p.verdict {
            Some(Verdict::Throttled {
                detail,
                retry_after_secs,
            }) => assert!(
                detail.contains("rate limited") && *retry_after_secs == Some(RETRY_AFTER),
                "{detail} {retry_after_secs:?}"
            ),
            other => panic!("{endpoint:?}: {other:?}"),
        }
        assert!(
            !matches!(p.state, Some(State::Invalid | State::Expired)),
            "{:?}",
            p.state
        );
        assert_eq!(p.check_errors, 1);
        let o = &snap.tokens["other"];
        assert_eq!(
            o.verdict,
            Some(Verdict::Healthy),
            "the other token is checked"
        );
        assert_eq!(o.last_check, p.last_check);
        d.evaluate().await;
        assert!(sink.messages().is_empty(), "{:#?}", subjects(&sink));

        // The limit is lifted (the fault was for one request); the next check succeeds.
        sb.advance_clock(900);
        clock.advance(900);
        d.check_now().await;
        let snap = state.load().unwrap();
        let p = &snap.tokens["prod"];
        assert_eq!(p.verdict, Some(Verdict::Healthy));
        assert_eq!(p.check_errors, 0);
        assert!(sink.messages().is_empty(), "{:#?}", subjects(&sink));
        figures.push(format!("{endpoint:?} code {code}: {} ms", took.as_millis()));
    }
    println!(
        "rate limited with Retry-After {RETRY_AFTER}s: a check of two tokens returned in {}; no email; next check healthy",
        figures.join(", ")
    );
    d.stop().await;
}

/// Issue 13, point 7: Meta's business-use-case throttle (code 80008, access back in 30
/// minutes by `estimated_time_to_regain_access`, no Retry-After). The daemon defers the
/// token's check until then: no call in between however often it is asked, no alert, never
/// "invalid"; `status` and `/metrics`' state show the throttle; at the time Meta gave, the
/// deferred check runs by itself and the token is healthy.
#[tokio::test]
async fn a_throttled_token_is_checked_again_when_access_returns_not_before() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    sb.throttle_business(30);
    let port = crate::util::free_port();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("billbytekot-prod", &token)],
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            sections(sink.port, "")
        ),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    d.check_now().await;
    assert_eq!(
        sb.stats().requests_for(Endpoint::Phone),
        1,
        "asked once, then deferred"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir(&ws.config).join("state.json")).unwrap())
            .unwrap();
    let ts = &state["tokens"]["billbytekot-prod"];
    assert_eq!(ts["verdict"]["verdict"], "throttled", "{ts}");
    let until = ts["throttled_until"].as_str().expect("deferred until");
    let until: jiff::Timestamp = until.parse().unwrap();
    let wait = until.as_second() - tokenwarden::daemon::Clock::now(&clock).as_second();
    assert!((25 * 60..=30 * 60).contains(&wait), "{wait}");
    let samples = scrape(port).await;
    assert_eq!(
        sample(
            &samples,
            "tokenwarden_token_throttled_until_timestamp_seconds"
        ),
        Some(until.as_second() as f64),
        "{samples:?}"
    );
    let status = ws.run(&["status"]);
    assert!(status.stdout.contains("throttled"), "{status:?}");
    assert!(!status.stdout.contains("INVALID"), "{status:?}");

    // Just before access returns: still nothing sent.
    sb.advance_clock(25 * 60);
    clock.advance(25 * 60);
    d.evaluate().await;
    assert_eq!(sb.stats().requests_for(Endpoint::Phone), 1);
    // When it returns, the deferred check runs on its own.
    sb.advance_clock(6 * 60);
    clock.advance(6 * 60);
    d.evaluate().await;
    assert_eq!(sb.stats().requests_for(Endpoint::Phone), 2);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir(&ws.config).join("state.json")).unwrap())
            .unwrap();
    let ts = &state["tokens"]["billbytekot-prod"];
    assert_eq!(ts["verdict"]["verdict"], "healthy", "{ts}");
    assert!(ts.get("throttled_until").is_none(), "{ts}");
    assert_eq!(
        sample(
            &scrape(port).await,
            "tokenwarden_token_throttled_until_timestamp_seconds"
        ),
        Some(0.0)
    );
    d.stop().await;
    assert!(subjects(&sink).is_empty(), "{:?}", subjects(&sink));
}

/// Issue 14, point 2: a stop during a rotation finishes the step in progress (here the
/// delivery, a command that takes 2 s) and goes no further: the record says "promote next",
/// the old token is still current, and the next start promotes the delivered candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_rotation_finishes_the_step_in_progress_and_the_next_start_resumes() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let expires = expiry_of(&sb);
    let old = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let dir = tempfile::tempdir().unwrap();
    let (mint, _admin) = crate::util::mint_source(&sb, dir.path(), sandbox::DEMO_SYSTEM_USER_ID);
    let (started, done, got) = (
        dir.path().join("started"),
        dir.path().join("done"),
        dir.path().join("got"),
    );
    let extra = format!(
        "{mint}\n[[token.target]]\nname = \"slow\"\nkind = \"exec\"\ntimeout = \"20s\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; cat > {}; sleep 2; touch {}\"]\n",
        started.display(),
        got.display(),
        done.display()
    );
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
        "[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let current = || async {
        use tokenwarden::store::SecretStore;
        tokenwarden::store::file::FileStore::new(ws.store.clone(), "prod".into())
            .current()
            .await
            .unwrap()
            .expose()
            .to_string()
    };
    let clock = OffsetClock::default();
    // Due at once: the first check starts the rotation.
    step_to(&sb, &clock, expires, 20 * DAY - 60);
    let d = Running::start(&ws.config, &clock);
    let t0 = std::time::Instant::now();
    while !started.exists() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let asked = std::time::Instant::now();
    d.stop().await;
    let took = asked.elapsed();
    assert!(
        done.exists(),
        "the delivery in progress finished before the exit"
    );
    assert!(took >= std::time::Duration::from_millis(1500), "{took:?}");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state_dir(&ws.config).join("rotations/prod.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["step"], "promote", "{record}");
    assert_eq!(current().await, old, "not promoted during the stop");
    let delivered = std::fs::read_to_string(&got).unwrap();
    assert_ne!(delivered.trim(), old);

    // The next start resumes at the promotion: the delivered candidate becomes current.
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    d.stop().await;
    assert_eq!(current().await, delivered.trim());
    assert_eq!(sb.stats().minted, 1);
}

/// Issue 14, point 28: a target that already held the current token when the daemon first
/// checked it (nothing to push, so no record was written) and was then restored from an old
/// backup was "synced" with only an INFO line. A first sync may be silent; a change after a
/// check that found the target current is drift, and gets its email.
#[tokio::test]
async fn drift_after_a_check_that_found_the_target_current_is_emailed() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    let current = format!("# backend\nWHATSAPP_ACCESS_TOKEN={token}\nPORT=8080\n");
    crate::util::write_private(&env, &current);
    let extra = format!(
        "[[token.target]]\nname = \"backend-env\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
        env.display()
    );
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&token),
            extra: &extra,
        }],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    assert_eq!(std::fs::read_to_string(&env).unwrap(), current);
    assert!(subjects(&sink).is_empty(), "{:?}", subjects(&sink));
    // Someone restores an old backup.
    crate::util::write_private(
        &env,
        "# backend\nWHATSAPP_ACCESS_TOKEN=EAAGrestoredfrombackup\nPORT=8080\n",
    );
    d.check_now().await;
    d.stop().await;
    assert_eq!(std::fs::read_to_string(&env).unwrap(), current, "repaired");
    let subjects = subjects(&sink);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(
        subjects[0].contains("DRIFT billbytekot-prod"),
        "{subjects:?}"
    );
    for (_, raw) in sink.messages() {
        assert_no_leak(&raw, &[&token], "drift email");
    }
}
