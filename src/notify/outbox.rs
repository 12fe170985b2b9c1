//! The persistent outbox: at-least-once, in practice exactly-once, delivery of on-call email,
//! through the state directory's shared [`Queue`] (its layout and promises are there).
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

use std::path::Path;

use jiff::Timestamp;

use super::{Email, Mailer, NotifyError};
pub use crate::state::queue::{BACKOFF_BASE, BACKOFF_CAP, Backlog, SENT_RETENTION};
use crate::state::queue::{Failure, Plan, Queue, Queued};

/// The email outbox in `<state_dir>/outbox/`.
pub type Outbox = Queue<Email>;

/// One queued email and its delivery bookkeeping, as stored in `<id>.json`.
pub type OutboxEntry = crate::state::queue::Entry<Email>;

/// What an [`Outbox::flush`] did.
pub type FlushReport = crate::state::queue::FlushReport<NotifyError>;

impl Queued for Email {
    const NOUN: &'static str = "email";

    fn id(&self) -> &str {
        &self.id
    }

    fn token(&self) -> &str {
        &self.token
    }
}

impl Queue<Email> {
    /// Opens (creating, mode 0700) `<state_dir>/outbox/`.
    ///
    /// # Errors
    /// The directory cannot be created or its mode set.
    pub fn open(state_dir: &Path) -> std::io::Result<Outbox> {
        Queue::open_dir(
            state_dir.join(crate::state::OUTBOX_DIR),
            "the email it holds is then not sent",
        )
    }

    /// Sends every email due at `now`, oldest first (see [`Queue::flush_with`]): 30 s
    /// doubling per attempt up to 1 h after a transient failure, the full hour after a refusal
    /// or a config problem; when the server cannot be reached at all, the remaining due
    /// entries are marked with the same failure rather than each waiting for its own timeout.
    pub async fn flush(&self, mailer: &Mailer, now: Timestamp) -> FlushReport {
        self.flush_with(now, &mailer.describe(), |email| async move {
            mailer.send_classified(&email).await.map_err(|f| Failure {
                plan: match f.error {
                    NotifyError::Transient(_) => Plan::Backoff,
                    NotifyError::Rejected(_) | NotifyError::Config(_) => Plan::Cap,
                },
                error: f.error,
                server_wide: f.server_wide,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_with_rfc3339_times() {
        let e = OutboxEntry {
            item: Email {
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

    /// Outboxes written before the queue was shared call the item `email`: still read, so an
    /// upgrade sends what was waiting.
    #[test]
    fn entries_written_by_the_email_only_outbox_are_still_read() {
        let old = r#"{"email":{"id":"a-1","token":"t","subject":"s","text":"x","html":"x"},
            "enqueued_at":"2026-01-02T03:04:05Z","attempts":0,"next_attempt":null,"last_error":null}"#;
        let e: OutboxEntry = serde_json::from_str(old).unwrap();
        assert_eq!(e.item.id, "a-1");
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
