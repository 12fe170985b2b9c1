//! The commands a user types first: `config check`, `demo`, `sandbox`, `import`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tokenwarden::sandbox::{self, Sandbox, TokenSpec};

use crate::util::{TokenEntry, Workspace, run, run_with_stdin, write_private};

#[test]
fn config_check_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    write_private(
        &cfg,
        "[meta]\napp_id = \"634974688087057\"\napp_secret = { env = \"TW_TEST_SECRET\" }\n[[token]]\nname = \"prod\"\nphone_number_id = \"106540352242922\"\n",
    );
    let r = run(
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[("TW_TEST_SECRET", "s3cr3t-canary")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("OK, 1 token(s): prod"), "{r:?}");
    assert!(!r.all().contains("s3cr3t-canary"));
}

#[test]
fn config_check_names_every_fault_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broken.toml");
    write_private(
        &cfg,
        r#"[meta]
app_id = "63497468808705x"
app_secret = "pasted-secret-canary"
api_version = "21"

[[token]]
name = "prod"
phone_number_id = "+1 555-010-4477"
colour = "red"

[[token]]
name = "prod"
waba_id = ""
store = { kind = "aws", region = "ap-south-1" }
"#,
    );
    let r = run(&["--config", cfg.to_str().unwrap(), "config", "check"], &[]);
    assert_eq!(r.code, 78, "{r:?}");
    let path = cfg.display().to_string();
    for (line, field) in [
        (2, "meta.app_id"),
        (3, "meta.app_secret"),
        (4, "meta.api_version"),
        (8, "token[0].phone_number_id"),
        (9, "token[0].colour"),
        (12, "token[1].name"),
        (13, "token[1].waba_id"),
        (14, "token[1].store"),
    ] {
        let needle = format!("{path}:{line}:");
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains(&needle) && l.contains(&format!("`{field}")),),
            "no error for {field} at line {line}:\n{}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("missing field `secret_id`"), "{r:?}");
    assert!(
        !r.all().contains("pasted-secret-canary"),
        "an inline secret is never echoed"
    );
}

#[test]
fn config_check_warns_when_the_pinned_graph_version_is_near_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // v20.0 ended 2026-09-24: still a valid config, but a loud warning.
    write_private(
        &cfg,
        "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\napi_version = \"v20.0\"\n[[token]]\nname = \"a\"\n",
    );
    let r = run(
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[("S", "x")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr
            .contains("`meta.api_version` v20.0: ended on 2026-09-24"),
        "{r:?}"
    );
}

/// Issue 14, points 2 and 8 through the binary: the unit's `ExecStartPre` warns when the
/// config's worst case would outlast `TimeoutStopSec`, and names a token pasted into an id
/// field by fingerprint only (the journal keeps what `config check` prints).
#[test]
fn config_check_warns_about_the_unit_timeouts_and_never_prints_a_pasted_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    write_private(
        &cfg,
        "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\ntimeout = \"60s\"\n[[token]]\nname = \"a\"\n",
    );
    let r = run(
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[("S", "x")],
    );
    assert_eq!(r.code, 0, "a warning, not an error: {r:?}");
    assert!(r.stderr.contains("TimeoutStopSec=360"), "{r:?}");
    // 4 calls of 4 x 60 s plus three 5 s waits, and 3 store operations of 15 s.
    assert!(r.stderr.contains("up to 1065 s"), "{r:?}");

    let token = "EAAGm0PX4ZCpsBAKZCanaryPastedIntoTheWrongField0123456789";
    write_private(
        &cfg,
        &format!(
            "[meta]\napp_id = \"1\"\napp_secret = {{ env = \"S\" }}\n[[token]]\nname = \"a\"\nphone_number_id = \"{token}\"\n"
        ),
    );
    let r = run(
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[("S", "x")],
    );
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.all().contains("phone_number_id"), "{r:?}");
    crate::util::assert_no_leak(&r.all(), &[token], "config check output");
}

#[test]
fn config_check_fails_78_when_a_secret_reference_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    write_private(
        &cfg,
        "[meta]\napp_id = \"1\"\napp_secret = { credential = \"meta-app-secret\" }\n[[token]]\nname = \"a\"\n",
    );
    let r = run(&["--config", cfg.to_str().unwrap(), "config", "check"], &[]);
    assert_eq!(r.code, 78, "{r:?}");
    assert!(
        r.stderr.contains("CREDENTIALS_DIRECTORY") && r.stderr.contains("meta.app_secret"),
        "{r:?}"
    );
}

#[test]
fn a_missing_config_file_exits_78_naming_the_path_and_the_env_variable_is_honoured() {
    let r = run(
        &[
            "--config",
            "/nonexistent/tokenwarden.toml",
            "config",
            "check",
        ],
        &[],
    );
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/tokenwarden.toml"), "{r:?}");
    let r = run(
        &["config", "check"],
        &[("TOKENWARDEN_CONFIG", "/nonexistent/from-env.toml")],
    );
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/from-env.toml"), "{r:?}");
}

#[test]
fn demo_runs_with_no_config_and_shows_a_healthy_and_a_flagged_token_then_the_daemon() {
    let r = run(&["demo", "--pace", "2"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("billbytekot-prod") && r.stdout.contains("billbytekot-staging"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("2 token(s) checked: 1 healthy, 1 with problems"),
        "{r:?}"
    );
    assert!(r.stdout.contains("+1 555-010-4477"), "{r:?}");
    // Rotation: prod minted (old revoked after the grace), staging replaced by a staged token.
    for want in [
        "rotation due now",
        "billbytekot-prod: rotated. The new token",
        "billbytekot-staging: staged version",
        "billbytekot-staging: rotation",
        "is current and the old one",
        "saw 1 token minted and 1 revoked",
        "wave 1: backend-env",
        "POS webhook receiver: rotation for billbytekot-prod",
        "signature valid",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?}: {r:?}");
    }
    // Both env files and the webhook got the token the rotation made current.
    let new_fp = r
        .stdout
        .split("billbytekot-prod: rotated. The new token (fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the rotation names the new token");
    assert_eq!(
        r.stdout
            .matches(&format!("now holds token {new_fp}"))
            .count(),
        2,
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains(&format!("token {new_fp}, signature valid")),
        "{r:?}"
    );
    assert!(!r.all().contains(sandbox::DEMO_APP_SECRET), "{r:?}");
    // The daemon part: each alert once, in order, then the recovery after the new token.
    let emails: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once("email: ").map(|(_, s)| s))
        .collect();
    let expected = [
        "[tokenwarden] WARNING shop-a: WhatsApp token expires in 16 seconds",
        "[tokenwarden] WARNING shop-a: WhatsApp token expires in 10 seconds",
        "[tokenwarden] CRITICAL shop-a: WhatsApp token expires in 4 seconds",
        "[tokenwarden] EXPIRED shop-a: WhatsApp token expired",
        "[tokenwarden] RESOLVED shop-a: WhatsApp token healthy again",
    ];
    assert_eq!(emails.len(), expected.len(), "{r:?}");
    for (got, want) in emails.iter().zip(expected) {
        assert!(got.starts_with(want), "{got:?} is not {want:?}\n{r:?}");
    }
    assert!(
        r.stdout.contains("OK shop-a"),
        "status shows the recovered token: {r:?}"
    );
}

#[test]
fn sandbox_command_serves_on_loopback_and_refuses_other_addresses() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("{url}/_sandbox/state"))
            .await
            .unwrap()
            .status()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.is_success(), "{status}");

    let r = run(&["sandbox", "--listen", "0.0.0.0:0"], &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("loopback only"), "{r:?}");
}

#[tokio::test]
async fn import_stores_a_pasted_token_and_refuses_a_wrong_paste() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), sandbox::Scenario::demo())
        .await
        .unwrap();
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let entry = TokenEntry {
        name: "prod",
        value: None,
        extra: "",
    };
    let ws = Workspace::new(&sb, &[entry]);
    let cfg = ws.config.to_str().unwrap().to_string();
    let t = token.clone();
    let c = cfg.clone();
    let r = tokio::task::spawn_blocking(move || {
        run_with_stdin(
            &["--config", &c, "import", "--token", "prod"],
            &[],
            Some(&format!("{t}\n")),
        )
    })
    .await
    .unwrap();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("fingerprint"), "{r:?}");
    assert!(!r.all().contains(&token));
    let stored = std::fs::read_to_string(&ws.store).unwrap();
    assert!(stored.contains(&token));

    let c = cfg.clone();
    let r = tokio::task::spawn_blocking(move || {
        run_with_stdin(
            &["--config", &c, "import", "--token", "prod"],
            &[],
            Some("Bearer EAAGsomethingsomethingsomethingsomething\n"),
        )
    })
    .await
    .unwrap();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("Bearer"), "{r:?}");
    assert_eq!(
        std::fs::read_to_string(&ws.store).unwrap(),
        stored,
        "a refused value changes nothing"
    );

    let c = cfg.clone();
    let r = tokio::task::spawn_blocking(move || crate::util::run(&["--config", &c, "doctor"], &[]))
        .await
        .unwrap();
    assert_eq!(r.code, 0, "the imported token passes doctor: {r:?}");
}

#[tokio::test]
async fn check_exit_codes_follow_the_monitoring_plugin_convention() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), sandbox::Scenario::demo())
        .await
        .unwrap();
    let healthy = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    let soon = sb.issue_token(
        TokenSpec::system_user_60d()
            .wabas(&[sandbox::DEMO_WABA_ID])
            .expiring_in(5 * 86_400 + 3600),
    );
    let revoked = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    sb.invalidate(&revoked, 466);
    let ws = Workspace::new(
        &sb,
        &[
            TokenEntry::new("healthy", &healthy),
            TokenEntry::new("soon", &soon),
            TokenEntry::new("revoked", &revoked),
        ],
    );
    let cfg = ws.config.to_str().unwrap().to_string();
    let c = cfg.clone();
    let results = tokio::task::spawn_blocking(move || {
        ["healthy", "soon", "revoked"].map(|t| run(&["--config", &c, "check", "--token", t], &[]))
    })
    .await
    .unwrap();
    assert_eq!(
        results.iter().map(|r| r.code).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "{results:#?}"
    );
    assert!(
        results[1]
            .stdout
            .starts_with("WARNING soon: deadline in 5 days"),
        "{:?}",
        results[1]
    );
    let c = cfg.clone();
    let all = tokio::task::spawn_blocking(move || run(&["--config", &c, "check", "--json"], &[]))
        .await
        .unwrap();
    assert_eq!(all.code, 2, "{all:?}");
    let v: serde_json::Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    for r in results.iter().chain([&all]) {
        crate::util::assert_no_leak(&r.all(), &[&healthy, &soon, &revoked], "check output");
    }
    // Graph unreachable: UNKNOWN (3), never "invalid".
    let text = std::fs::read_to_string(&ws.config).unwrap().replace(
        &sb.base_url(),
        // Nothing listens on port 9, and no test binds it.
        "http://127.0.0.1:9",
    );
    write_private(&ws.config, &text);
    let c = cfg.clone();
    let down = tokio::task::spawn_blocking(move || {
        run(&["--config", &c, "check", "--token", "healthy"], &[])
    })
    .await
    .unwrap();
    assert_eq!(down.code, 3, "{down:?}");
    assert!(
        down.stdout.starts_with("UNKNOWN healthy: cannot check"),
        "{down:?}"
    );
}

#[test]
fn logs_are_json_on_request_and_carry_syslog_priorities_under_journald() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"a\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = cfg.to_str().unwrap();
    let json = run(
        &["--log-format", "json", "--config", c, "config", "check"],
        &[("S", "x")],
    );
    assert_eq!(json.code, 0, "{json:?}");
    let line = json
        .stderr
        .lines()
        .find(|l| l.contains("readable by others"))
        .unwrap_or_else(|| panic!("{json:?}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "WARN");
    let journal = run(
        &["--config", c, "config", "check"],
        &[("S", "x"), ("JOURNAL_STREAM", "8:12345")],
    );
    assert!(
        journal
            .stderr
            .lines()
            .any(|l| l.starts_with("<4>") && l.contains("readable by others")),
        "{journal:?}"
    );
}

/// `config check` reads every secret the config references, not only the app secret: a mint's
/// admin token, a webhook's secret, the SMTP password and a group template's references are
/// first used at a rotation or an email, long after the unit's `ExecStartPre=` passed. Each
/// unreadable one is an error at its line and field, and the check exits 78.
#[test]
fn config_check_reads_every_secret_reference_and_names_each_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let cfg = dir.path().join("c.toml");
    write_private(
        &cfg,
        &format!(
            r#"[meta]
app_id = "634974688087057"
app_secret = {{ env = "TW_TEST_SECRET" }}

[email]
kind = "smtp"
host = "127.0.0.1"
tls = "none"
username = "tokenwarden"
password = {{ env = "TW_TEST_SMTP_PASSWORD" }}
from = "tokenwarden@example.com"
to = ["oncall@example.com"]

[[token]]
name = "prod"
phone_number_id = "106540352242922"
source = "mint"
mint = {{ system_user_id = "104169029247128", admin_token = {{ file = "{d}/admin-token" }} }}

[[token.target]]
name = "hook"
kind = "webhook"
url = "https://hooks.example.com/token"
secret = {{ file = "{d}/webhook-secret" }}

[[group]]
name = "fleet"
discover = {{ kind = "file", key_prefix = "fleet/" }}
source = "mint"
mint = {{ system_user_id = "104169029247128", admin_token = {{ env = "TW_TEST_GROUP_ADMIN" }} }}
"#
        ),
    );
    let c = cfg.to_str().unwrap();
    let r = run(
        &["--config", c, "config", "check"],
        &[("TW_TEST_SECRET", "s3cr3t-canary")],
    );
    assert_eq!(r.code, 78, "{r:?}");
    assert!(!r.stdout.contains("OK"), "{r:?}");
    for (line, field, names) in [
        (10, "email.password", "TW_TEST_SMTP_PASSWORD".to_string()),
        (18, "token[0].mint.admin_token", format!("{d}/admin-token")),
        (
            24,
            "token[0].target[0].secret",
            format!("{d}/webhook-secret"),
        ),
        (
            30,
            "group[0].mint.admin_token",
            "TW_TEST_GROUP_ADMIN".to_string(),
        ),
    ] {
        let found = r.stderr.lines().any(|l| {
            l.starts_with(&format!("error: {c}:{line}:"))
                && l.contains(&format!("`{field}`"))
                && l.contains(&names)
        });
        assert!(found, "no error for `{field}` at line {line}: {r:?}");
    }
    assert!(!r.stderr.contains("meta.app_secret"), "{r:?}");

    // With every secret in place the same config passes, and no value is printed.
    write_private(&dir.path().join("admin-token"), "admin-canary-value\n");
    write_private(&dir.path().join("webhook-secret"), "hook-canary-value\n");
    let r = run(
        &["--config", c, "config", "check"],
        &[
            ("TW_TEST_SECRET", "s3cr3t-canary"),
            ("TW_TEST_SMTP_PASSWORD", "smtp-canary-value"),
            ("TW_TEST_GROUP_ADMIN", "group-canary-value"),
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("OK, 1 token(s): prod"), "{r:?}");
    crate::util::assert_no_leak(
        &r.all(),
        &[
            "s3cr3t-canary",
            "admin-canary-value",
            "hook-canary-value",
            "smtp-canary-value",
            "group-canary-value",
        ],
        "config check output",
    );
}

/// A config whose mode (0644) makes `config check` log a warning, the log line these tests
/// look at.
fn config_that_logs_a_warning(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"a\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    cfg
}

/// Runs the binary with standard error on a pseudo-terminal (standard output piped) and
/// returns its exit code and what it wrote to the terminal.
fn run_on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the out-parameters; the name, termios
    // and window-size pointers may be null. Each descriptor is owned exactly once below.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.args(args)
        .env_remove("TOKENWARDEN_CONFIG")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .env("TOKENWARDEN_LOG", "tokenwarden=debug,warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("run tokenwarden");
    // The terminal ends (EIO) once no process holds its other side: drop the parent's copy.
    drop(cmd);
    let mut terminal = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match terminal.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    let status = child.wait().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

/// Logs redirected to a file or a pipe carry no colour codes: they would stay in the file as
/// text (`^[[33m WARN^[[0m`).
#[test]
fn logs_carry_no_colour_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_that_logs_a_warning(dir.path());
    // An empty NO_COLOR counts as unset (no-color.org): only the redirection may turn colour off.
    let r = run(
        &["--config", cfg.to_str().unwrap(), "config", "check"],
        &[("S", "x"), ("NO_COLOR", "")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("readable by others"), "{r:?}");
    assert!(
        !r.all().contains('\u{1b}'),
        "ANSI escape in redirected output: {r:?}"
    );
}

/// On a terminal logs are coloured, unless `NO_COLOR` is set to anything but the empty string.
#[test]
fn logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_that_logs_a_warning(dir.path());
    let args = ["--config", cfg.to_str().unwrap(), "config", "check"];
    let (code, tty) = run_on_a_terminal(&args, &[("S", "x")]);
    assert_eq!(code, 0, "{tty}");
    assert!(tty.contains("readable by others"), "{tty}");
    assert!(tty.contains('\u{1b}'), "no colour on a terminal: {tty:?}");
    // An empty NO_COLOR counts as unset.
    let (_, tty) = run_on_a_terminal(&args, &[("S", "x"), ("NO_COLOR", "")]);
    assert!(
        tty.contains('\u{1b}'),
        "no colour with an empty NO_COLOR: {tty:?}"
    );
    for value in ["1", "true"] {
        let (code, tty) = run_on_a_terminal(&args, &[("S", "x"), ("NO_COLOR", value)]);
        assert_eq!(code, 0, "{tty}");
        assert!(tty.contains("readable by others"), "{tty}");
        assert!(
            !tty.contains('\u{1b}'),
            "colour despite NO_COLOR={value}: {tty:?}"
        );
    }
}
