//! Shared fixtures of the integration tests, one file per topic. Everything is re-exported
//! here, so a test writes `use crate::util::{...}` whichever file a helper lives in.
//!
//! - `workspace`: the Graph sandbox, a temporary workspace with a config, its state directory.
//! - `smtp`: the aiosmtpd sink, a relay that is down, the test CA, the subjects of what arrived.
//! - `aws`: moto (AWS Secrets Manager) and SDK clients for it.
//! - `binary`: the real `tokenwarden` binary, run once or as a daemon, and signals to it.
//! - `metrics`: scraping `/metrics` and reading it with the Prometheus reference parser.
//! - `daemon`: the daemon in this process (`Running`), its clock moved with the sandbox's.
//! - `alertmanager` (not re-exported: `util::alertmanager::Alertmanager`): a real
//!   Alertmanager on loopback with a webhook receiver.
//! - `receivers` (not re-exported: `util::receivers::Receiver`): strict loopback stand-ins
//!   for PagerDuty, Slack and Teams, with scripted faults and outages.
//! - `platforms`: loopback fakes of the platform targets' APIs, a rotation to a set of targets,
//!   the daemon binary run until a condition holds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub mod alertmanager;
mod aws;
mod binary;
mod daemon;
mod metrics;
mod platforms;
pub mod receivers;
mod smtp;
mod workspace;

pub use aws::*;
pub use binary::*;
pub use daemon::*;
pub use metrics::*;
pub use platforms::*;
pub use smtp::*;
pub use workspace::*;

/// A day in seconds, for moving the sandbox's clock and reading expiries.
pub const DAY: i64 = 86_400;

/// The venv holding moto and aiosmtpd, made by `tests/run.sh`.
pub fn venv() -> PathBuf {
    let dir = std::env::var_os("TOKENWARDEN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    assert!(
        dir.join("bin/python").exists(),
        "no test venv at {}: run `tests/run.sh`, which installs moto and aiosmtpd",
        dir.display()
    );
    dir
}

/// A script of `tests/support/` run by the venv's Python.
pub(crate) fn support_script(name: &str) -> Command {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(name),
    );
    cmd
}

/// Starts a support server that prints `port N` once it listens and exits when its stdin
/// closes (so it dies with the test process); returns it and the port.
fn spawn_server(cmd: &mut Command) -> (Child, u16) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{cmd:?} said {line:?}"));
    (child, port)
}

/// A unique name for a secret or a directory.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes a file of mode 0600.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A loopback port with nothing listening (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts that none of `secrets` appears in `haystack`.
pub fn assert_no_leak(haystack: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !haystack.contains(s),
            "a secret leaked into {what}:\n{haystack}"
        );
    }
}
