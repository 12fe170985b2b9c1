//! The persistent outbox: at-least-once, in practice exactly-once, delivery of on-call email.
//!
//! Layout under `<state_dir>/outbox/` (mode 0700):
//! - `<id>.json` (0600, written atomically): one [`OutboxEntry`], the email plus its delivery
//!   bookkeeping, a record of the state directory's [`RecordStore`] (like the flush lock, on
//!   the directory). It exists from [`Outbox::enqueue`] until the server accepted the email.
//! - `sent/<id>`: a marker written right after the server's 250 and before the entry is
//!   removed, kept for [`SENT_RETENTION`]. It makes a second enqueue of a delivered id a no-op
//!   (a daemon that crashed before recording that it asked for the email asks again) and lets a
//!   flush interrupted between the marker and the removal finish without sending twice.
//!
//! The only window for a duplicate is a crash between the server's 250 and the marker write.
//!
//! An entry is never given up on: no limit on attempts or age. A warning that arrives a day
//! late still tells on-call what to do, and an outbox that silently emptied itself would hide
//! the outage. The backoff is capped ([`BACKOFF_CAP`]) so that once the server is back every
//! waiting email goes out within one cap, however long the outage was; [`Outbox::backlog`]
//! shows the queue meanwhile (`tokenwarden_emails_queued` and
//! `tokenwarden_outbox_oldest_queued_timestamp_seconds` in `/metrics`).

use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Email, Mailer, NotifyError};
use crate::fsutil::write_atomic;
use crate::state::{Layout, RecordLock, RecordStore, StateError};

/// First retry delay after a transient failure; doubles with each attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest delay between attempts, and the delay after a permanent refusal: the most a
/// returned server waits for the outbox to try again.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// How long a delivered id is remembered, so enqueueing it again sends nothing.
pub const SENT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// One queued email and its delivery bookkeeping, as stored in `<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEntry {
    /// The email, exactly as enqueued.
    pub email: Email,
    /// When it was enqueued: the outbox sends oldest first.
    #[serde(with = "ts")]
    pub enqueued_at: Timestamp,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// Not tried again before this time; `None` until the first failure (due at once).
    #[serde(with = "ts_opt")]
    pub next_attempt: Option<Timestamp>,
    /// Why the last attempt failed (never contains the SMTP password).
    pub last_error: Option<String>,
}

impl OutboxEntry {
    /// When this entry may be sent.
    pub fn due_at(&self) -> Timestamp {
        self.next_attempt.unwrap_or(self.enqueued_at)
    }
}

/// What a [`Outbox::flush`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Ids the server accepted (now out of the outbox).
    pub sent: Vec<String>,
    /// Ids that were due but not delivered, with why; they stay queued.
    pub failed: Vec<(String, NotifyError)>,
    /// Entries still queued after the flush (failed ones and ones not yet due).
    pub remaining: usize,
}

/// What on-call can see of the outbox while mail is not getting through (`/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Emails waiting for the server.
    pub pending: usize,
    /// When the oldest waiting email was queued; `None` when nothing waits.
    pub oldest_queued: Option<Timestamp>,
}

/// The persistent outbox in `<state_dir>/outbox/`. One process owns a state directory.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    entries: RecordStore,
    sent_dir: PathBuf,
    /// Two overlapping flushes in one process would send the same entry twice.
    flush_lock: tokio::sync::Mutex<()>,
}

impl Outbox {
    /// Opens (creating, mode 0700) `<state_dir>/outbox/`.
    ///
    /// # Errors
    /// The directory cannot be created or its mode set.
    pub fn open(state_dir: &Path) -> std::io::Result<Outbox> {
        let dir = state_dir.join(crate::state::OUTBOX_DIR);
        let sent_dir = dir.join("sent");
        for d in [&dir, &sent_dir] {
            // Emails name tokens and their troubles: not for other local users. Created 0700
            // (never wider for a moment, whatever the umask), and an older one narrowed.
            crate::fsutil::create_private_dir(d)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Outbox {
            entries: RecordStore::new(dir.clone(), Layout::Pretty)
                .aside_loses("the email it holds is then not sent"),
            dir,
            sent_dir,
            flush_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The outbox directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, id: &str) -> PathBuf {
        self.entries.path(id)
    }

    fn sent_path(&self, id: &str) -> PathBuf {
        self.sent_dir.join(id)
    }

    /// Queues `email`, on disk before this returns. Idempotent by id: an id that is already
    /// queued, or was delivered within [`SENT_RETENTION`], is left as it is and `false` is
    /// returned.
    ///
    /// # Errors
    /// An id that is not `[a-z0-9-]{1,128}` (`InvalidInput`), or the write failed.
    pub fn enqueue(&self, email: &Email, now: Timestamp) -> std::io::Result<bool> {
        if !Email::valid_id(&email.id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("email id {:?} is not 1 to 128 of a-z, 0-9 and -", email.id),
            ));
        }
        let path = self.entry_path(&email.id);
        if path.exists() || self.sent_path(&email.id).exists() {
            tracing::debug!(id = %email.id, token = %email.token, "email already queued or sent; not queued again");
            return Ok(false);
        }
        let entry = OutboxEntry {
            email: email.clone(),
            enqueued_at: now,
            attempts: 0,
            next_attempt: None,
            last_error: None,
        };
        self.save(&entry)?;
        tracing::info!(id = %email.id, token = %email.token, "email queued");
        Ok(true)
    }

    fn save(&self, entry: &OutboxEntry) -> std::io::Result<()> {
        self.entries
            .save(&entry.email.id, entry)
            .map_err(StateError::into_io)
    }

    /// Every queued entry, sorted by `enqueued_at` then id. A file that cannot be parsed is
    /// logged and left in place for a person to look at.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn pending(&self) -> std::io::Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            // Skips `sent/` and the temp files of an atomic write (`.<name>.tmp.<pid>`).
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') || !item.file_type()?.is_file() {
                continue;
            }
            match self.entries.load::<OutboxEntry>(id) {
                Ok(Some(entry)) if entry.email.id == id => out.push(entry),
                // Sent and removed by a flush since the listing.
                Ok(None) => {}
                Ok(_) => {
                    tracing::error!(file = %item.path().display(), "outbox entry's id does not match its file name; skipped")
                }
                Err(e) => {
                    tracing::error!(file = %item.path().display(), error = %e, "unreadable outbox entry; skipped")
                }
            }
        }
        out.sort_by(|a, b| (a.enqueued_at, &a.email.id).cmp(&(b.enqueued_at, &b.email.id)));
        Ok(out)
    }

    /// An exclusive lock on the outbox for one flush, across processes; `None` when another
    /// process holds it.
    fn try_lock_dir(&self) -> std::io::Result<Option<RecordLock>> {
        self.entries.try_lock_dir().map_err(StateError::into_io)
    }

    /// How many emails wait, and since when. Entries are never
    /// dropped for their age or their number of attempts (an alert that is late is still worth
    /// more than none), so this is how a long SMTP outage shows.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn backlog(&self) -> std::io::Result<Backlog> {
        let pending = self.pending()?;
        Ok(Backlog {
            pending: pending.len(),
            oldest_queued: pending.iter().map(|e| e.enqueued_at).min(),
        })
    }

    /// How many emails are queued (0 if the directory cannot be read).
    pub fn len(&self) -> usize {
        self.pending().map(|p| p.len()).unwrap_or(0)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the earliest entry becomes due (in the past when one is due now); `None` when
    /// the outbox is empty.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.pending().ok()?.iter().map(OutboxEntry::due_at).min()
    }

    /// Sends every entry due at `now`, oldest first. An entry is deleted only after the
    /// server accepted it. A failure is recorded in the entry (`attempts`, `last_error`) and
    /// delays it: 30 s doubling per attempt up to 1 h, less up to a quarter as jitter; a
    /// refusal or a config problem waits the full hour. When the server cannot be reached at
    /// all, the remaining due entries are marked with the same failure rather than each
    /// waiting for its own timeout.
    pub async fn flush(&self, mailer: &Mailer, now: Timestamp) -> FlushReport {
        let _guard = self.flush_lock.lock().await;
        let mut report = FlushReport::default();
        // Another process (the daemon, or a `tokenwarden rotate` beside it) flushing the same
        // outbox right now would send the same entries: let it, and send nothing here.
        let _process_lock = match self.try_lock_dir() {
            Ok(Some(f)) => f,
            Ok(None) => {
                tracing::debug!(dir = %self.dir.display(), "another process is sending from the outbox");
                report.remaining = self.len();
                return report;
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot lock the outbox; nothing sent");
                report.remaining = self.len();
                return report;
            }
        };
        self.prune_sent(now);
        let entries = match self.pending() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the outbox; nothing sent");
                report.remaining = 0;
                return report;
            }
        };
        let mut server_down: Option<NotifyError> = None;
        for mut entry in entries {
            if entry.due_at() > now {
                continue;
            }
            let id = entry.email.id.clone();
            let token = entry.email.token.clone();
            if self.sent_path(&id).exists() {
                // Delivered by a flush that stopped before removing the entry.
                self.remove_entry(&id, &token);
                continue;
            }
            let failure = match &server_down {
                Some(e) => e.clone(),
                None => match mailer.send_classified(&entry.email).await {
                    Ok(()) => {
                        crate::failpoint::hit("outbox.after_send");
                        self.mark_sent(&id, &token, now);
                        tracing::info!(id = %id, token = %token, attempts = entry.attempts + 1, via = %mailer.describe(), "email delivered");
                        report.sent.push(id);
                        continue;
                    }
                    Err(f) => {
                        if f.server_wide {
                            server_down = Some(f.error.clone());
                        }
                        f.error
                    }
                },
            };
            entry.attempts = entry.attempts.saturating_add(1);
            let delay = backoff(entry.attempts, &failure, &id);
            let next = now
                .checked_add(
                    jiff::SignedDuration::try_from(delay)
                        .unwrap_or(jiff::SignedDuration::from_secs(3600)),
                )
                .unwrap_or(now);
            entry.next_attempt = Some(next);
            entry.last_error = Some(failure.to_string());
            match &failure {
                NotifyError::Transient(_) => {
                    tracing::warn!(id = %id, token = %token, attempts = entry.attempts, next_attempt = %next, error = %failure, "email not delivered; will retry")
                }
                NotifyError::Rejected(_) | NotifyError::Config(_) => {
                    tracing::error!(id = %id, token = %token, attempts = entry.attempts, next_attempt = %next, error = %failure, "email refused; kept, will retry in an hour: fix the cause")
                }
            }
            if let Err(e) = self.save(&entry) {
                // The entry stays as it was, due now: retried sooner, never lost.
                tracing::error!(id = %id, token = %token, error = %e, "cannot record the failed attempt in the outbox");
            }
            report.failed.push((id, failure));
        }
        report.remaining = self.len();
        report
    }

    /// Marker first, then removal: a crash in between must not lead to a second send.
    fn mark_sent(&self, id: &str, token: &str, now: Timestamp) {
        if let Err(e) = write_atomic(&self.sent_path(id), now.to_string().as_bytes(), 0o600) {
            tracing::error!(id = %id, token = %token, error = %e, "cannot record a delivered email; it may be sent again after a restart");
        }
        crate::failpoint::hit("outbox.after_mark");
        self.remove_entry(id, token);
    }

    fn remove_entry(&self, id: &str, token: &str) {
        match std::fs::remove_file(self.entry_path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(id = %id, token = %token, error = %e, "cannot remove a delivered email from the outbox")
            }
        }
    }

    /// Forgets delivered ids older than [`SENT_RETENTION`], by the delivery time written in
    /// each marker: the same clock as `now`, which callers (and tests) supply.
    fn prune_sent(&self, now: Timestamp) {
        let Ok(items) = std::fs::read_dir(&self.sent_dir) else {
            return;
        };
        for item in items.flatten() {
            let sent_at = std::fs::read_to_string(item.path())
                .ok()
                .and_then(|t| t.trim().parse::<Timestamp>().ok());
            let old = sent_at
                .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
                .is_some_and(|age| age > SENT_RETENTION);
            if old {
                let _ = std::fs::remove_file(item.path());
            }
        }
    }
}

/// Delay before the next attempt after `attempts` failures ending with `error`.
fn backoff(attempts: u32, error: &NotifyError, id: &str) -> Duration {
    if !matches!(error, NotifyError::Transient(_)) {
        return BACKOFF_CAP;
    }
    let exp = attempts.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    // Jitter spreads retries of many entries (and of several daemons sharing a relay); a
    // per-process random hasher is randomness enough and needs no extra dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(id.as_bytes());
    h.write_u32(attempts);
    let fraction = (h.finish() % 1000) as u32;
    full - full / 4 * fraction / 1000
}

/// Timestamps as RFC 3339 strings (jiff's serde support is not enabled).
mod ts {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<jiff::Timestamp, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// As [`ts`], for an optional timestamp.
mod ts_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(t),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<jiff::Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30s_caps_at_an_hour_and_jitters_down_only() {
        let t = NotifyError::Transient("x".into());
        for (attempts, full) in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (40, 3600)] {
            let d = backoff(attempts, &t, "a").as_secs();
            assert!(d <= full && d >= full * 3 / 4, "attempt {attempts}: {d}s");
        }
        assert_eq!(
            backoff(1, &NotifyError::Rejected("x".into()), "a"),
            BACKOFF_CAP
        );
        assert_eq!(
            backoff(1, &NotifyError::Config("x".into()), "a"),
            BACKOFF_CAP
        );
    }

    #[test]
    fn entry_round_trips_with_rfc3339_times() {
        let e = OutboxEntry {
            email: Email {
                id: "a-1".into(),
                token: "t".into(),
                subject: "s".into(),
                text: "x".into(),
                html: "<p>x</p>".into(),
            },
            enqueued_at: "2026-01-02T03:04:05Z".parse().unwrap(),
            attempts: 2,
            next_attempt: Some("2026-01-02T03:05:05Z".parse().unwrap()),
            last_error: Some("temporary failure".into()),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"2026-01-02T03:04:05Z\""), "{json}");
        assert_eq!(serde_json::from_str::<OutboxEntry>(&json).unwrap(), e);
    }

    #[tokio::test]
    async fn a_flush_while_another_process_flushes_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        let mail_dir = dir.path().join("mail");
        let mailer = Mailer::new(&crate::notify::EmailConfig::Folder {
            path: mail_dir.clone(),
            from: "tw@example.com".into(),
            to: vec!["oncall@example.com".into()],
        })
        .unwrap();
        let email = Email {
            id: "prod-1".into(),
            token: "prod".into(),
            subject: "s".into(),
            text: "x".into(),
            html: "x".into(),
        };
        let now: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        ob.enqueue(&email, now).unwrap();
        // Another process's flush holds the lock (flock is per open file, as across processes).
        let other = ob.try_lock_dir().unwrap().expect("free");
        let r = ob.flush(&mailer, now).await;
        assert!(r.sent.is_empty() && r.failed.is_empty());
        assert_eq!(r.remaining, 1);
        drop(other);
        let r = ob.flush(&mailer, now).await;
        assert_eq!(r.sent, vec!["prod-1".to_string()]);
        assert_eq!(std::fs::read_dir(&mail_dir).unwrap().count(), 1);
    }

    #[test]
    fn backlog_counts_waiting_emails_and_names_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        assert_eq!(ob.backlog().unwrap(), Backlog::default());
        let email = |id: &str| Email {
            id: id.into(),
            token: "t".into(),
            subject: "s".into(),
            text: "x".into(),
            html: "x".into(),
        };
        let early: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let late: Timestamp = "2026-01-03T03:04:05Z".parse().unwrap();
        ob.enqueue(&email("b"), late).unwrap();
        ob.enqueue(&email("a"), early).unwrap();
        assert_eq!(
            ob.backlog().unwrap(),
            Backlog {
                pending: 2,
                oldest_queued: Some(early),
            }
        );
    }

    #[test]
    fn enqueue_refuses_ids_that_are_not_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Outbox::open(dir.path()).unwrap();
        for id in ["", "../x", "A", "a/b", &"a".repeat(129)] {
            let email = Email {
                id: id.to_string(),
                token: "t".into(),
                subject: "s".into(),
                text: "x".into(),
                html: "x".into(),
            };
            assert!(ob.enqueue(&email, Timestamp::now()).is_err(), "{id:?}");
        }
        assert_eq!(ob.len(), 0);
    }
}
