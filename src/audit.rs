//! The audit log: one JSON object per line, appended, never rewritten, for every check, email
//! and (later) rotation step and push. Fingerprints name tokens; a token never appears.
//!
//! `<state_dir>/audit.jsonl`, mode 0600, opened in append mode for each record so that log
//! rotation (rename, or copytruncate) needs no signal. A failed write is logged and never stops
//! the daemon: the audit log records the work, it must not prevent it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::{Value, json};

/// File name inside the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// An append-only JSON-lines log.
#[derive(Debug, Clone)]
pub struct Audit {
    path: PathBuf,
}

impl Audit {
    /// The audit log of `state_dir`.
    pub fn new(state_dir: &Path) -> Audit {
        Audit {
            path: state_dir.join(AUDIT_FILE),
        }
    }

    /// Appends `{"ts": now, "event": event, ...fields}`. `fields` must hold no secret: callers
    /// pass fingerprints, names, states and ids only.
    pub fn record(&self, now: Timestamp, event: &str, fields: Value) {
        let mut line = json!({ "ts": now.to_string(), "event": event });
        if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
            obj.extend(extra);
        }
        let mut text = line.to_string();
        text.push('\n');
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "cannot append to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_json_lines_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::new(dir.path());
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        a.record(
            now,
            "check",
            json!({"token": "prod", "fingerprint": "abcd1234"}),
        );
        a.record(now, "email_queued", json!({"token": "prod", "id": "x"}));
        let text = std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "check");
        assert_eq!(lines[0]["fingerprint"], "abcd1234");
        assert_eq!(
            std::fs::metadata(dir.path().join(AUDIT_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
