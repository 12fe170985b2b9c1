//! The audit log: one JSON object per line, appended, never rewritten, for every check, email,
//! rotation step, push and the rest of [`AuditEvent`]'s kinds (the line's `event`).
//! Fingerprints name tokens; a token never appears.
//!
//! `<state_dir>/audit.jsonl`, mode 0600, opened in append mode for each record so that log
//! rotation (rename, or copytruncate) needs no signal. A failed write is logged and never stops
//! the daemon: the audit log records the work, it must not prevent it.
//!
//! It rotates itself by size ([`AuditLimits`], `[audit]` in the config): once a record takes
//! the file past `max_size_mb`, `audit.jsonl` becomes `audit.jsonl.1`, `.1` becomes `.2`, and
//! so on up to `keep` old files (the oldest is dropped). The rotating process holds the file's
//! `flock`, and looks again at its size under the lock, so two processes appending (the daemon
//! and a `tokenwarden rotate`) rotate once; a record appended by the other meanwhile lands in
//! the file that was renamed, or in the new one, never nowhere.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::{Value, json};

/// File name inside the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// What an audit record is about: its `event` field, written as the variant's snake_case word
/// (`rotation_step`, `email_queued`, ...), the words the log has always had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    /// A token was checked (verdict, state, fingerprint).
    Check,
    /// An email was put in the outbox.
    EmailQueued,
    /// The mail server accepted an email.
    EmailSent,
    /// An alert was put in the queues of the receivers beside email.
    AlertQueued,
    /// A receiver accepted an alert.
    AlertSent,
    /// Sending an alert to a receiver failed (it stays queued, or is set aside if refused).
    AlertFailed,
    /// A receiver has kept failing for longer than its `failing_after`.
    ReceiverFailing,
    /// Sending an email failed (it stays queued).
    EmailFailed,
    /// A corrupt `state.json` was moved aside.
    StateSetAside,
    /// Members joined or left a group.
    Groups,
    /// The state disk filled up and the reserve was freed.
    DiskFull,
    /// The drift check re-pushed targets or found them failing.
    Reconcile,
    /// `tokenwarden rollback` made the previous token current again.
    Rollback,
    /// `tokenwarden stage` staged a token.
    Staged,
    /// A rotation step ran.
    RotationStep,
    /// A rotation started.
    RotationStarted,
    /// Meta extended the current token in place instead of issuing a successor.
    TokenExtended,
    /// A revoke was refused because the token is (or may be) current.
    RevokeRefused,
    /// A candidate that will not be promoted was revoked.
    CandidateRevoked,
    /// An overtaken rotation's candidate was left unrevoked (another rotation may still
    /// promote it).
    CandidateLeft,
    /// A token was pushed to a target.
    Push,
    /// A failed rollout put the old token back.
    RollbackPush,
    /// The search for forgotten copies of an old token ran.
    Scan,
}

/// When the audit log rotates and how many old files it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    /// Rotate once the file is at least this large.
    pub max_bytes: u64,
    /// Old files kept (`audit.jsonl.1` ... `audit.jsonl.<keep>`).
    pub keep: u32,
}

impl Default for AuditLimits {
    /// 16 MB and 5 old files: at about 300 bytes a record, some 50,000 records a file.
    fn default() -> Self {
        AuditLimits {
            max_bytes: 16 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// An append-only JSON-lines log.
#[derive(Debug, Clone)]
pub struct Audit {
    path: PathBuf,
    limits: AuditLimits,
}

impl Audit {
    /// The audit log of `state_dir`, with the default [`AuditLimits`].
    pub fn new(state_dir: &Path) -> Audit {
        Audit {
            path: state_dir.join(AUDIT_FILE),
            limits: AuditLimits::default(),
        }
    }

    /// The same log, rotating at `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: AuditLimits) -> Audit {
        self.limits = limits;
        self
    }

    /// Appends `{"ts": now, "event": event, ...fields}`. `fields` must hold no secret: callers
    /// pass fingerprints, names, states and ids only.
    pub fn record(&self, now: Timestamp, event: AuditEvent, fields: Value) {
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
            .and_then(|mut f| f.write_all(text.as_bytes()).map(|()| f));
        match written {
            Ok(f) => {
                if let Err(e) = self.rotate_if_full(&f) {
                    tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit log");
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot append to the audit log");
            }
        }
    }

    /// The name of old file `n` (1 is the newest).
    fn old(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Rotates when `f` (the file just appended to) reached the limit.
    fn rotate_if_full(&self, f: &std::fs::File) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        if f.metadata()?.len() < self.limits.max_bytes {
            return Ok(());
        }
        // Another process rotating now: it does the work.
        if f.try_lock().is_err() {
            return Ok(());
        }
        // Under the lock, the file must still be the one named audit.jsonl, and still full:
        // a process that waited behind another's rotation holds the renamed file.
        let current = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let locked = f.metadata()?;
        if (current.dev(), current.ino()) != (locked.dev(), locked.ino())
            || current.len() < self.limits.max_bytes
        {
            return Ok(());
        }
        for n in (1..self.limits.keep).rev() {
            match std::fs::rename(self.old(n), self.old(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.old(1))?;
        tracing::info!(path = %self.path.display(), keep = self.limits.keep, "audit log rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds became an enum; each is written as the word the string used to be, so every
    /// line of `audit.jsonl` is byte for byte what it was.
    #[test]
    fn event_kinds_are_written_as_the_words_they_always_were() {
        use AuditEvent as E;
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::new(dir.path());
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        let table = [
            (E::Check, "check"),
            (E::EmailQueued, "email_queued"),
            (E::EmailSent, "email_sent"),
            (E::AlertQueued, "alert_queued"),
            (E::AlertSent, "alert_sent"),
            (E::AlertFailed, "alert_failed"),
            (E::ReceiverFailing, "receiver_failing"),
            (E::EmailFailed, "email_failed"),
            (E::StateSetAside, "state_set_aside"),
            (E::Groups, "groups"),
            (E::DiskFull, "disk_full"),
            (E::Reconcile, "reconcile"),
            (E::Rollback, "rollback"),
            (E::Staged, "staged"),
            (E::RotationStep, "rotation_step"),
            (E::RotationStarted, "rotation_started"),
            (E::TokenExtended, "token_extended"),
            (E::RevokeRefused, "revoke_refused"),
            (E::CandidateRevoked, "candidate_revoked"),
            (E::CandidateLeft, "candidate_left"),
            (E::Push, "push"),
            (E::RollbackPush, "rollback_push"),
            (E::Scan, "scan"),
        ];
        let mut expected = String::new();
        for (kind, word) in table {
            a.record(now, kind, json!({"token": "prod", "event_id": 1}));
            // What `record(now, "<word>", ...)` wrote before the enum.
            let mut line = json!({ "ts": now.to_string(), "event": word });
            line.as_object_mut().unwrap().extend(
                json!({"token": "prod", "event_id": 1})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            expected.push_str(&line.to_string());
            expected.push('\n');
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join(AUDIT_FILE)).unwrap(),
            expected
        );
    }

    /// `audit.jsonl` grew without limit. With a 2 kB limit and 2 old files, 200 records leave
    /// three files, none much past the limit, holding the newest records in order.
    #[test]
    fn rotates_by_size_keeping_the_configured_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::new(dir.path()).with_limits(AuditLimits {
            max_bytes: 2000,
            keep: 2,
        });
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        for i in 0..200 {
            a.record(now, AuditEvent::Check, json!({"token": "prod", "n": i}));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        let mut numbers = Vec::new();
        for name in ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"] {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() < 2000 + 100, "{name}: {} bytes", text.len());
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                numbers.push(v["n"].as_u64().unwrap());
            }
        }
        assert_eq!(*numbers.last().unwrap(), 199);
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous and in order across the files"
        );
    }

    #[test]
    fn appends_json_lines_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::new(dir.path());
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        a.record(
            now,
            AuditEvent::Check,
            json!({"token": "prod", "fingerprint": "abcd1234"}),
        );
        a.record(
            now,
            AuditEvent::EmailQueued,
            json!({"token": "prod", "id": "x"}),
        );
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
