//! The email module against a real SMTP server (aiosmtpd on loopback): TLS modes, AUTH,
//! error classes, the outbox's no-loss/no-duplicate guarantees, and that the SMTP password
//! never shows up anywhere.

use std::path::Path;
use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use tokenwarden::notify::{Email, EmailConfig, Mailer, NotifyError, Outbox};

use crate::util::{SinkOpts, SmtpSink, assert_no_leak, free_port, test_ca};

const CANARY: &str = "pw-CANARY-123";

fn email(id: &str, token: &str) -> Email {
    Email {
        id: id.to_string(),
        token: token.to_string(),
        subject: format!("Token {token}: {id}"),
        text: format!("Plain text about {token}."),
        html: format!("<p>HTML about <b>{token}</b>.</p>"),
    }
}

/// Parses an `[email]` section the way the config file holds it.
fn config(toml_body: &str) -> EmailConfig {
    #[derive(serde::Deserialize)]
    struct File {
        email: EmailConfig,
    }
    toml::from_str::<File>(&format!("[email]\n{toml_body}"))
        .unwrap_or_else(|e| panic!("{e}\n{toml_body}"))
        .email
}

fn plain_config(port: u16) -> EmailConfig {
    config(&format!(
        "kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"tokenwarden <tw@example.com>\"\nto = [\"oncall@example.com\"]\ntimeout = \"5s\""
    ))
}

/// A password file holding the canary.
fn canary_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("smtp-password");
    std::fs::write(&p, format!("{CANARY}\n")).unwrap();
    p
}

/// Every byte under `dir`, for leak checks.
fn all_files(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_files(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

/// The value of header `name` in a raw message (first occurrence, unfolded).
fn header<'a>(raw: &'a str, name: &str) -> Option<&'a str> {
    raw.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[tokio::test]
async fn plain_smtp_to_loopback() {
    let sink = SmtpSink::start(&SinkOpts::default());
    let mailer = Mailer::new(&plain_config(sink.port)).unwrap();
    assert_eq!(
        mailer.describe(),
        format!(
            "SMTP 127.0.0.1:{} (no TLS) to oncall@example.com",
            sink.port
        )
    );
    mailer.send(&email("plain-1", "prod")).await.unwrap();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    let (env, raw) = &msgs[0];
    assert_eq!(env["mail_from"], "tw@example.com");
    assert_eq!(env["rcpt_tos"], serde_json::json!(["oncall@example.com"]));
    assert_eq!(env["tls"], false);
    assert_eq!(header(raw, "Message-ID"), Some("<plain-1@tokenwarden>"));
}

#[tokio::test]
async fn starttls_with_auth_to_several_recipients_threads_by_token() {
    let ca = test_ca();
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&SinkOpts {
        starttls: Some((ca.cert.clone(), ca.key.clone())),
        auth: Some(("alice".into(), CANARY.into())),
        ..SinkOpts::default()
    });
    let cfg = config(&format!(
        "kind = \"smtp\"\nhost = \"localhost\"\nport = {}\nusername = \"alice\"\n\
         password = {{ file = \"{}\" }}\nca_file = \"{}\"\n\
         from = \"tokenwarden <tw@example.com>\"\n\
         to = [\"A One <a@example.com>\", \"b@example.org\"]",
        sink.port,
        canary_file(tmp.path()).display(),
        ca.ca_cert.display()
    ));
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let mailer = Mailer::new(&cfg).unwrap();
    assert_eq!(
        mailer.describe(),
        format!(
            "SMTP localhost:{} (STARTTLS) as alice to a@example.com, b@example.org",
            sink.port
        )
    );
    assert_no_leak(
        &format!("{mailer:?} {}", mailer.describe()),
        &[CANARY],
        "the mailer's Debug",
    );

    for (id, token) in [
        ("w-prod-1", "prod"),
        ("w-prod-2", "prod"),
        ("w-stg-1", "staging"),
    ] {
        mailer.send(&email(id, token)).await.unwrap();
    }
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 3);
    for (env, raw) in &msgs {
        assert_eq!(env["mail_from"], "tw@example.com");
        assert_eq!(
            env["rcpt_tos"],
            serde_json::json!(["a@example.com", "b@example.org"])
        );
        assert_eq!(env["tls"], true, "STARTTLS must be on");
        assert_eq!(env["auth_user"], "alice");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        let plain = raw.find("Content-Type: text/plain").expect("text part");
        let html = raw.find("Content-Type: text/html").expect("html part");
        assert!(plain < html, "text first, then HTML");
        assert!(header(raw, "Date").is_some());
        assert!(header(raw, "To").unwrap().contains("a@example.com"));
    }
    let (_, first) = &msgs[0];
    assert_eq!(header(first, "Subject"), Some("Token prod: w-prod-1"));
    assert_eq!(header(first, "Message-ID"), Some("<w-prod-1@tokenwarden>"));
    assert_eq!(header(first, "X-Tokenwarden-Token"), Some("prod"));
    assert!(first.contains("Plain text about prod."));
    assert!(first.contains("<b>prod</b>"));
    let thread = |i: usize| header(&msgs[i].1, "In-Reply-To").unwrap().to_string();
    assert_eq!(thread(0), "<thread-prod@tokenwarden>");
    assert_eq!(thread(0), thread(1), "one token, one thread");
    assert_ne!(thread(0), thread(2), "another token, another thread");
    assert_eq!(header(&msgs[2].1, "References"), Some(thread(2).as_str()));
    for (_, raw) in &msgs {
        assert_no_leak(raw, &[CANARY], "a delivered message");
    }
}

#[tokio::test]
async fn implicit_tls() {
    let ca = test_ca();
    let sink = SmtpSink::start(&SinkOpts {
        implicit: Some((ca.cert.clone(), ca.key.clone())),
        ..SinkOpts::default()
    });
    let cfg = config(&format!(
        "kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\n\
         from = \"tw@example.com\"\nto = [\"oncall@example.com\"]",
        sink.port,
        ca.ca_cert.display()
    ));
    let mailer = Mailer::new(&cfg).unwrap();
    assert!(
        mailer.describe().contains("(implicit TLS)"),
        "{}",
        mailer.describe()
    );
    mailer.send(&email("implicit-1", "prod")).await.unwrap();
    let msgs = sink.messages();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].0["tls"], true);
}

#[tokio::test]
async fn untrusted_certificate_is_transient_and_sends_nothing() {
    // Without ca_file the test CA is unknown: the handshake fails, nothing goes in plain text.
    let ca = test_ca();
    let sink = SmtpSink::start(&SinkOpts {
        starttls: Some((ca.cert.clone(), ca.key.clone())),
        ..SinkOpts::default()
    });
    let cfg = config(&format!(
        "kind = \"smtp\"\nhost = \"localhost\"\nport = {}\nfrom = \"tw@example.com\"\nto = [\"o@example.com\"]",
        sink.port
    ));
    let err = Mailer::new(&cfg)
        .unwrap()
        .send(&email("untrusted-1", "prod"))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_550_is_rejected_and_a_451_is_transient() {
    for (code, transient) in [(550u16, false), (451, true)] {
        let sink = SmtpSink::start(&SinkOpts {
            reject: Some(code),
            ..SinkOpts::default()
        });
        let mailer = Mailer::new(&plain_config(sink.port)).unwrap();
        let err = mailer.send(&email("rej-1", "prod")).await.unwrap_err();
        match (&err, transient) {
            (NotifyError::Transient(m), true) | (NotifyError::Rejected(m), false) => {
                assert!(m.contains(&code.to_string()), "{m}")
            }
            _ => panic!("{code} gave {err:?}"),
        }

        // Through the outbox: kept, with the error recorded; a refusal waits the full hour.
        let state = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(state.path()).unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        outbox.enqueue(&email("rej-2", "prod"), now).unwrap();
        let report = outbox.flush(&mailer, now).await;
        assert!(report.sent.is_empty());
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.remaining, 1);
        let entry = &outbox.pending().unwrap()[0];
        assert_eq!(entry.attempts, 1);
        assert!(
            entry
                .last_error
                .as_deref()
                .unwrap()
                .contains(&code.to_string())
        );
        let wait = entry.next_attempt.unwrap().duration_since(now);
        if transient {
            assert!(
                wait <= SignedDuration::from_secs(30) && wait >= SignedDuration::from_secs(22),
                "{wait:?}"
            );
        } else {
            assert_eq!(wait, SignedDuration::from_secs(3600));
        }
        assert!(sink.messages().is_empty());
    }
}

#[tokio::test]
async fn server_down_then_up_delivers_exactly_once_across_a_restart() {
    let port = free_port();
    let mailer = Mailer::new(&plain_config(port)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();

    // Nothing listening: Transient, the email stays.
    let err = mailer.send(&email("down-0", "prod")).await.unwrap_err();
    assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");
    let outbox = Outbox::open(state.path()).unwrap();
    assert!(outbox.enqueue(&email("down-1", "prod"), t0).unwrap());
    assert!(
        outbox
            .enqueue(
                &email("down-2", "staging"),
                t0 + SignedDuration::from_secs(1)
            )
            .unwrap()
    );
    assert_eq!(outbox.next_due(), Some(t0));
    let report = outbox
        .flush(&mailer, t0 + SignedDuration::from_secs(1))
        .await;
    assert!(report.sent.is_empty());
    assert_eq!(report.failed.len(), 2, "{report:?}");
    assert!(
        report
            .failed
            .iter()
            .all(|(_, e)| matches!(e, NotifyError::Transient(_)))
    );
    assert_eq!(report.remaining, 2);

    // Backoff: not due before next_attempt, so a flush then tries nothing.
    let pending = outbox.pending().unwrap();
    let due = pending
        .iter()
        .map(|e| e.next_attempt.unwrap())
        .max()
        .unwrap();
    assert!(due > t0 + SignedDuration::from_secs(1));
    assert_eq!(
        outbox.next_due(),
        pending.iter().map(|e| e.next_attempt).min().unwrap()
    );
    let early = outbox
        .flush(&mailer, t0 + SignedDuration::from_secs(2))
        .await;
    assert!(
        early.sent.is_empty() && early.failed.is_empty(),
        "{early:?}"
    );
    drop(outbox);

    // The server comes up; a new Outbox over the same directory (a restart) finds both.
    let sink = SmtpSink::start(&SinkOpts {
        port: Some(port),
        ..SinkOpts::default()
    });
    let outbox = Outbox::open(state.path()).unwrap();
    let ids: Vec<String> = outbox
        .pending()
        .unwrap()
        .into_iter()
        .map(|e| e.item.id)
        .collect();
    assert_eq!(ids, ["down-1", "down-2"], "oldest first");
    let report = outbox.flush(&mailer, due).await;
    assert_eq!(report.sent, ["down-1", "down-2"]);
    assert!(report.failed.is_empty());
    assert_eq!(report.remaining, 0);
    assert_eq!(outbox.len(), 0);
    assert_eq!(outbox.next_due(), None);

    // Nothing is sent twice: not by another flush, not by enqueueing a delivered id again.
    assert!(outbox.flush(&mailer, due).await.sent.is_empty());
    assert!(!outbox.enqueue(&email("down-1", "prod"), due).unwrap());
    assert!(outbox.flush(&mailer, due).await.sent.is_empty());
    let msgs = sink.messages();
    let got: Vec<&str> = msgs
        .iter()
        .map(|(_, raw)| header(raw, "Message-ID").unwrap())
        .collect();
    assert_eq!(got, ["<down-1@tokenwarden>", "<down-2@tokenwarden>"]);
}

#[tokio::test]
async fn enqueueing_one_id_twice_delivers_once() {
    let sink = SmtpSink::start(&SinkOpts::default());
    let mailer = Mailer::new(&plain_config(sink.port)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(state.path()).unwrap();
    let now = Timestamp::now();
    let mut e = email("twice-1", "prod");
    assert!(outbox.enqueue(&e, now).unwrap());
    e.subject = "changed".into();
    assert!(
        !outbox.enqueue(&e, now).unwrap(),
        "an id already queued is left as it is"
    );
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        outbox.pending().unwrap()[0].item.subject,
        "Token prod: twice-1"
    );
    let report = outbox.flush(&mailer, now).await;
    assert_eq!(report.sent, ["twice-1"]);
    assert_eq!(sink.messages().len(), 1);

    // The files: 0700 directory, 0600 entries.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(outbox.dir()), 0o700);
    assert!(outbox.enqueue(&email("twice-2", "prod"), now).unwrap());
    assert_eq!(mode(&outbox.dir().join("twice-2.json")), 0o600);
}

#[tokio::test]
async fn folder_mailer_writes_eml_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mail");
    let cfg = config(&format!(
        "kind = \"folder\"\npath = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"a@example.com\", \"b@example.com\"]",
        dir.display()
    ));
    assert!(cfg.problems().is_empty());
    let mailer = Mailer::new(&cfg).unwrap();
    assert_eq!(
        mailer.describe(),
        format!("folder {} to a@example.com, b@example.com", dir.display())
    );
    let outbox = Outbox::open(tmp.path()).unwrap();
    outbox
        .enqueue(&email("folder-1", "prod"), Timestamp::now())
        .unwrap();
    let report = outbox.flush(&mailer, Timestamp::now()).await;
    assert_eq!(report.sent, ["folder-1"]);
    let raw = std::fs::read_to_string(dir.join("folder-1.eml")).unwrap();
    assert_eq!(header(&raw, "Message-ID"), Some("<folder-1@tokenwarden>"));
    assert_eq!(
        header(&raw, "In-Reply-To"),
        Some("<thread-prod@tokenwarden>")
    );
    assert!(raw.contains("multipart/alternative") && raw.contains("<b>prod</b>"));
}

#[test]
fn problems_name_each_bad_field() {
    let tmp = tempfile::tempdir().unwrap();
    let missing_ca = tmp.path().join("nope.pem");
    let problems = |body: &str| -> Vec<String> {
        config(body)
            .problems()
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    };
    let base = "kind = \"smtp\"\nfrom = \"tw@example.com\"\nto = [\"o@example.com\"]\n";
    assert!(problems(&format!("{base}host = \"smtp.example.com\"")).is_empty());
    assert!(problems(&format!("{base}host = \"localhost\"\ntls = \"none\"")).is_empty());
    assert!(problems(&format!("{base}host = \"::1\"\ntls = \"none\"")).is_empty());
    assert!(problems(&format!("{base}host = \"127.0.0.2\"\ntls = \"none\"")).is_empty());
    assert_eq!(
        problems(&format!(
            "{base}host = \"smtp.example.com\"\ntls = \"none\""
        )),
        ["tls"]
    );
    assert_eq!(
        problems(&format!("{base}host = \"10.0.0.1\"\ntls = \"none\"")),
        ["tls"]
    );
    assert_eq!(
        problems(&format!("{base}host = \"h\"\npassword = {{ env = \"X\" }}")),
        ["password"]
    );
    assert_eq!(
        problems("kind = \"smtp\"\nhost = \"h\"\nfrom = \"tw@example.com\"\nto = []"),
        ["to"]
    );
    assert_eq!(
        problems(
            "kind = \"smtp\"\nhost = \"h\"\nfrom = \"not an address\"\nto = [\"o@example.com\", \"also bad\"]"
        ),
        ["from", "to[1]"]
    );
    assert_eq!(
        problems(&format!(
            "{base}host = \"h\"\nca_file = \"{}\"",
            missing_ca.display()
        )),
        ["ca_file"]
    );
    let not_pem = tmp.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    assert_eq!(
        problems(&format!(
            "{base}host = \"h\"\nca_file = \"{}\"",
            not_pem.display()
        )),
        ["ca_file"]
    );
    assert_eq!(
        problems(&format!("{base}host = \"h\"\ntimeout = \"soon\"")),
        ["timeout"]
    );
    assert_eq!(problems(&format!("{base}host = \"\"")), ["host"]);
    assert_eq!(
        problems("kind = \"folder\"\npath = \"/tmp/x\"\nfrom = \"tw@example.com\"\nto = []"),
        ["to"]
    );

    // Messages say what to do.
    let msg = config(&format!(
        "{base}host = \"smtp.example.com\"\ntls = \"none\""
    ))
    .problems()
    .remove(0)
    .1;
    assert!(
        msg.contains("smtp.example.com") && msg.contains("starttls"),
        "{msg}"
    );

    // Mailer::new refuses what problems() reports.
    let err = Mailer::new(&config(&format!(
        "{base}host = \"smtp.example.com\"\ntls = \"none\""
    )))
    .unwrap_err();
    assert!(
        matches!(&err, NotifyError::Config(m) if m.contains("email.tls")),
        "{err:?}"
    );

    // Serde: unknown keys and inline passwords are refused.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        email: EmailConfig,
    }
    let bad = toml::from_str::<File>(&format!("[email]\n{base}host = \"h\"\nportt = 1"));
    assert!(bad.is_err());
    let inline = toml::from_str::<File>(&format!(
        "[email]\n{base}host = \"h\"\nusername = \"u\"\npassword = \"{CANARY}\""
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(inline.contains("never written inline"), "{inline}");
}

/// Collects everything tracing logs on this thread.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_smtp_password_never_leaks() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );

    let ca = test_ca();
    let tmp = tempfile::tempdir().unwrap();
    // The server expects another password: the login fails.
    let sink = SmtpSink::start(&SinkOpts {
        starttls: Some((ca.cert.clone(), ca.key.clone())),
        auth: Some(("alice".into(), "the-right-one".into())),
        ..SinkOpts::default()
    });
    let cfg = config(&format!(
        "kind = \"smtp\"\nhost = \"localhost\"\nport = {}\nusername = \"alice\"\n\
         password = {{ file = \"{}\" }}\nca_file = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"o@example.com\"]",
        sink.port,
        canary_file(tmp.path()).display(),
        ca.ca_cert.display()
    ));
    let mailer = Mailer::new(&cfg).unwrap();
    let direct = mailer.send(&email("leak-1", "prod")).await.unwrap_err();
    assert!(
        matches!(direct, NotifyError::Config(_)),
        "a refused login is a config problem: {direct:?}"
    );

    let state = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(state.path()).unwrap();
    outbox
        .enqueue(&email("leak-2", "prod"), Timestamp::now())
        .unwrap();
    let report = outbox.flush(&mailer, Timestamp::now()).await;
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.remaining, 1);
    assert!(sink.messages().is_empty());

    // Nothing listening, and a missing password variable: more error paths.
    let down = Mailer::new(&config(&format!(
        "kind = \"smtp\"\nhost = \"localhost\"\nport = {}\nusername = \"alice\"\n\
         password = {{ file = \"{}\" }}\nca_file = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"o@example.com\"]",
        free_port(),
        canary_file(tmp.path()).display(),
        ca.ca_cert.display()
    )))
    .unwrap();
    let down_err = down.send(&email("leak-3", "prod")).await.unwrap_err();
    let missing = Mailer::new(&config(
        "kind = \"smtp\"\nhost = \"h\"\nusername = \"alice\"\n\
         password = { env = \"TOKENWARDEN_TEST_SURELY_UNSET_SMTP\" }\nfrom = \"tw@example.com\"\nto = [\"o@example.com\"]",
    ))
    .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("TOKENWARDEN_TEST_SURELY_UNSET_SMTP"),
        "{missing}"
    );

    let everything = format!(
        "{direct}\n{direct:?}\n{report:?}\n{down_err}\n{down_err:?}\n{missing:?}\n{mailer:?}\n{}\n{cfg:?}\n{}\n{}",
        mailer.describe(),
        all_files(state.path()),
        String::from_utf8_lossy(&logs.0.lock().unwrap()),
    );
    assert_no_leak(
        &everything,
        &[CANARY],
        "errors, Debug output, the outbox or the logs",
    );
    // The logs did record the failure, by id and token.
    let log = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(log.contains("leak-2") && log.contains("prod"), "{log}");
    assert!(
        !log.contains("Plain text about"),
        "no body in the logs:\n{log}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_as_transient() {
    // Accepts the connection, then says nothing: lettre alone would wait forever.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = config(&format!(
        "kind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         from = \"tw@example.com\"\nto = [\"o@example.com\"]\ntimeout = \"300ms\""
    ));
    let mailer = Mailer::new(&cfg).unwrap();
    let started = std::time::Instant::now();
    let err = mailer.send(&email("stall-1", "prod")).await.unwrap_err();
    assert!(matches!(err, NotifyError::Transient(_)), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(listener);
}
