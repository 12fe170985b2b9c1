//! The daemon in this process (`Running`), driven by control messages instead of its schedule,
//! and the config sections and clock moves the `daemon_*` tests share. Time moves by the
//! sandbox's clock and the daemon's `OffsetClock` together, never by sleeping.

use std::path::Path;
use std::sync::Arc;

use tokenwarden::daemon::{self, Control, OffsetClock};
use tokenwarden::sandbox::{Sandbox, TokenSpec};
use tokio::sync::{mpsc, oneshot};

use super::DAY;
use super::smtp::{SinkOpts, SmtpSink};
use super::workspace::{TokenEntry, Workspace, sandbox};

/// A daemon running in this process.
pub struct Running {
    /// Its control channel, for a test that sends a message without waiting for the answer.
    pub ctl: mpsc::Sender<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), daemon::DaemonError>>,
}

impl Running {
    /// Starts the daemon on `config` with `clock`.
    pub fn start(config: &Path, clock: &OffsetClock) -> Running {
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

    /// Checks every token now and waits until the check (and what it decided) is done.
    pub async fn check_now(&self) {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::CheckNow(tx)).await.unwrap();
        rx.await.unwrap();
    }

    /// Runs one wake-up of the loop (alerts, outbox, due work) without checking.
    pub async fn evaluate(&self) {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Evaluate(tx)).await.unwrap();
        rx.await.unwrap();
    }

    /// Reloads the config as SIGHUP does; the error says why a config was refused.
    pub async fn reload(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Reload(Some(tx))).await.unwrap();
        rx.await.unwrap()
    }

    /// Stops the daemon as SIGTERM does and asserts that it ended without an error.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `[meta]` tail plus daemon sections: no scheduled checks during the test (checks happen on
/// `check_now`), plain SMTP to the sink's port, thresholds from Meta's expiry only.
pub fn sections(smtp_port: u16, extra_alerts: &str) -> String {
    format!(
        "attempts = 1\ntimeout = \"5s\"\n\
         [schedule]\ncron = \"0 0 0 1 1 *\"\n\
         [alerts]\nmax_age = \"never\"\n{extra_alerts}\n\
         [email]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
         from = \"tokenwarden <tw@example.com>\"\nto = [\"oncall@example.com\", \"backup@example.com\"]\ntimeout = \"5s\"\n"
    )
}

/// Whether `subject` says `want`. The clocks keep running between a step to exactly N days
/// before expiry and the email's rendering, and a span is rounded down, so a second boundary
/// in between makes "7 days" read "6 days": both are accepted, nothing else.
pub fn says(subject: &str, want: &str) -> bool {
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
pub fn step_to(sb: &Sandbox, clock: &OffsetClock, expires_at: i64, left: i64) {
    let delta = (expires_at - left) - sb.now();
    sb.advance_clock(delta);
    clock.advance(delta);
}

/// A 60-day token's expiry, as the sandbox sets it: 60 days on, rounded up to the hour.
pub fn expiry_of(sb: &Sandbox) -> i64 {
    let t = sb.now() + 60 * DAY;
    (t + 3599) / 3600 * 3600
}

/// The opening most daemon tests share: the sandbox, a plain SMTP sink, one token `name` issued
/// from `spec`, and a workspace for it whose config has [`sections`] (with `extra_alerts`)
/// pointing at the sink. The daemon is not started: the test starts it in this process
/// ([`Running`]) or as the real binary. The sandbox and the sink stop when dropped: a test
/// that does not use one binds it to a named placeholder (`sb: _sb`), never to `_`.
pub struct World {
    pub sb: Sandbox,
    pub sink: SmtpSink,
    /// The token's value, for leak checks.
    pub token: String,
    pub ws: Workspace,
}

impl World {
    /// Starts the sandbox and the sink, issues the token and writes the workspace.
    pub async fn new(name: &str, spec: TokenSpec, extra_alerts: &str) -> World {
        let sb = sandbox().await;
        let sink = SmtpSink::start(&SinkOpts::default());
        let token = sb.issue_token(spec);
        let ws = Workspace::with_meta(
            &sb,
            &[TokenEntry::new(name, &token)],
            &sections(sink.port, extra_alerts),
        );
        World {
            sb,
            sink,
            token,
            ws,
        }
    }
}
