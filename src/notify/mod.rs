//! Email to on-call: the `[email]` config, SMTP and folder delivery, and a persistent outbox.
//!
//! The daemon renders an [`Email`] and hands it to the [`Outbox`], which writes it to disk
//! before anything is sent, so a restart loses nothing. [`Outbox::flush`] delivers what is due
//! through a [`Mailer`] and removes an entry only after the server accepted it, so a retry
//! duplicates nothing. A [`Mailer`] is either SMTP (through lettre, TLS by default) or a
//! folder of `.eml` files for the demo and dry runs.
//!
//! The SMTP password is a [`crate::secret::Secret`] resolved from a [`SecretRef`] when the
//! mailer is built; it never reaches an error, a log line, `Debug` output or the outbox.

mod folder;
mod message;
mod outbox;
mod smtp;

use serde::{Deserialize, Serialize};

pub use crate::config::email::{DEFAULT_TIMEOUT, EmailConfig, Tls};

pub use folder::FolderMailer;
pub use outbox::{
    BACKOFF_BASE, BACKOFF_CAP, Backlog, FlushReport, Outbox, OutboxEntry, SENT_RETENTION,
};
pub use smtp::SmtpMailer;

/// A stable, filename-safe email id: the token's name made safe plus a short hash of it (two
/// names that sanitize alike stay apart), then the ledger's key.
pub fn email_id(token: &str, key: &str) -> String {
    let safe: String = token
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "{safe}-{}-{key}",
        &crate::secret::Fingerprint::of(token).to_string()[..4]
    )
}

/// Where a decided alert goes: the email outbox (with `[email]`) and the receivers beside it.
#[derive(Debug, Clone, Copy)]
pub struct Sinks<'a> {
    /// The outbox, when `[email]` is configured.
    pub outbox: Option<&'a Outbox>,
    /// The `[[receiver]]`s (possibly none).
    pub channels: &'a crate::channel::Channels,
    /// A receiver that must not get this alert (the one it is about).
    pub except: Option<&'a str>,
}

/// Queues one decided alert: the email `id` about `token`, rendered as `rendered`, in the
/// outbox, and its [`crate::channel::Alert`] on every receiver that takes it; records both in
/// the audit log (`email_queued`, `alert_queued`). The one way an alert leaves tokenwarden's
/// core (the daemon's alerts and host alerts, drift, rotations). Without `[email]` the email
/// is logged instead. `what` names the kind of alert in the log.
///
/// # Errors
/// When the outbox or a receiver's queue cannot store it (the caller keeps it undecided, to
/// try again: every queue ignores an id it already holds).
#[allow(clippy::too_many_arguments)]
pub fn queue(
    sinks: Sinks<'_>,
    audit: &crate::audit::Audit,
    id: String,
    token: &str,
    rendered: crate::alert::Rendered,
    signal: &crate::channel::Signal<'_>,
    what: &str,
    now: jiff::Timestamp,
) -> std::io::Result<()> {
    let alert = crate::channel::Alert::new(&id, token, &rendered.summary, signal, now);
    let email = Email::from_rendered(id, token, rendered);
    match sinks.outbox {
        None => {
            tracing::warn!(token = %email.token, subject = %email.subject, "{what} (no [email] configured: logged only)");
        }
        Some(outbox) => match outbox.enqueue(&email, now) {
            Ok(_) => {
                tracing::info!(token = %email.token, email = %email.id, subject = %email.subject, "{what} queued");
                audit.record(
                    now,
                    crate::audit::AuditEvent::EmailQueued,
                    serde_json::json!({"token": email.token, "id": email.id, "subject": email.subject}),
                );
            }
            Err(e) => {
                tracing::error!(token = %email.token, subject = %email.subject, error = %e, "cannot queue the {what}");
                return Err(e);
            }
        },
    }
    match sinks
        .channels
        .dispatch(&alert, signal.resolves, sinks.except, now)
    {
        Ok(to) if to.is_empty() => Ok(()),
        Ok(to) => {
            tracing::info!(token = %alert.token, alert = %alert.id, receivers = ?to, "{what} queued for the receivers");
            audit.record(
                now,
                crate::audit::AuditEvent::AlertQueued,
                serde_json::json!({"token": alert.token, "id": alert.id, "receivers": to, "status": alert.status, "severity": alert.severity}),
            );
            Ok(())
        }
        Err(e) => {
            tracing::error!(token = %alert.token, error = %e, "cannot queue the {what} for the receivers");
            Err(e)
        }
    }
}

/// One email, fully rendered by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// Deterministic id, `[a-z0-9-]{1,128}`: the outbox key and the Message-ID local part
    /// (`<{id}@tokenwarden>`). The same event must always produce the same id, so that
    /// enqueueing it twice sends it once.
    pub id: String,
    /// The token's name. Every email about one token threads together: `In-Reply-To` and
    /// `References` name `<thread-{token}@tokenwarden>`, and `X-Tokenwarden-Token` carries it.
    pub token: String,
    /// The subject line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part (sent as multipart/alternative, text first).
    pub html: String,
}

impl Email {
    /// The email `id` about `token`, as `rendered`.
    pub fn from_rendered(id: String, token: &str, rendered: crate::alert::Rendered) -> Email {
        Email {
            id,
            token: token.to_string(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        }
    }

    /// Whether `id` is usable as an email id: 1 to 128 of `a-z`, `0-9` and `-`.
    ///
    /// The id becomes a file name and a Message-ID, so nothing else is allowed.
    pub fn valid_id(id: &str) -> bool {
        crate::state::queue::valid_id(id)
    }
}

/// Where emails go.
// Built once per daemon and never moved around in bulk: boxing the SMTP variant would only
// add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Mailer {
    /// An SMTP server.
    Smtp(SmtpMailer),
    /// A directory of `.eml` files.
    Folder(FolderMailer),
}

impl Mailer {
    /// Builds the mailer from its config; resolves the password reference now, so a missing
    /// secret is reported at startup rather than when on-call most needs the email. Opens no
    /// connection.
    ///
    /// # Errors
    /// [`NotifyError::Config`] when the config has a problem or the password cannot be read.
    pub fn new(cfg: &EmailConfig) -> Result<Mailer, NotifyError> {
        // The same checks as `config check`, so a daemon never starts with a config the
        // check would refuse (plain text to a remote host, above all).
        let problems = cfg.problems();
        if !problems.is_empty() {
            let list: Vec<String> = problems
                .iter()
                .map(|(field, msg)| format!("email.{field}: {msg}"))
                .collect();
            return Err(NotifyError::Config(list.join("; ")));
        }
        match cfg {
            EmailConfig::Smtp { .. } => SmtpMailer::new(cfg).map(Mailer::Smtp),
            EmailConfig::Folder { path, from, to } => {
                FolderMailer::new(path.clone(), from, to).map(Mailer::Folder)
            }
        }
    }

    /// Delivers one email. Returns once the server accepted it (or the file is written).
    ///
    /// # Errors
    /// [`NotifyError`], named by what to do next.
    pub async fn send(&self, email: &Email) -> Result<(), NotifyError> {
        // Logged here for direct sends; `Outbox::flush` logs its own, with the retry plan.
        match self.send_classified(email).await {
            Ok(()) => {
                tracing::info!(id = %email.id, token = %email.token, via = %self.describe(), "email delivered");
                Ok(())
            }
            Err(f) => {
                tracing::warn!(id = %email.id, token = %email.token, error = %f.error, "email not delivered");
                Err(f.error)
            }
        }
    }

    /// As [`Mailer::send`], also saying whether the failure concerns every email (the server
    /// is unreachable) rather than this one, so a flush can stop early.
    async fn send_classified(&self, email: &Email) -> Result<(), SendFailure> {
        if !Email::valid_id(&email.id) {
            return Err(SendFailure {
                error: NotifyError::Config(format!(
                    "email id {:?} is not 1 to 128 of a-z, 0-9 and -",
                    email.id
                )),
                server_wide: false,
            });
        }
        match self {
            Mailer::Smtp(m) => m.send(email).await,
            Mailer::Folder(m) => m.send(email).await,
        }
    }

    /// One line for logs and `config check`: `SMTP smtp.example.com:587 (STARTTLS) to a@x, b@y`.
    /// Never the password.
    pub fn describe(&self) -> String {
        match self {
            Mailer::Smtp(m) => m.describe(),
            Mailer::Folder(m) => m.describe(),
        }
    }
}

/// Why an email was not delivered, named by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Retry later: connection refused, timeout, TLS handshake, a 4xx reply, a full disk.
    #[error("temporary failure, will retry: {0}")]
    Transient(String),
    /// The server refused permanently (5xx): alert via logs, keep the email, retry rarely.
    #[error("refused by the mail server: {0}")]
    Rejected(String),
    /// Fix the config: bad address, unreadable password or CA file, credentials refused.
    #[error("email configuration problem: {0}")]
    Config(String),
}

/// A failed send and its reach.
struct SendFailure {
    error: NotifyError,
    /// True when no other email could get through either (nothing listening, TLS failure).
    server_wide: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_ids_are_safe_and_distinct_for_lookalike_names() {
        let a = email_id("shop.a", "warn-604800s-abcd1234");
        let b = email_id("shop-a", "warn-604800s-abcd1234");
        assert_ne!(a, b);
        assert!(crate::notify::Email::valid_id(&a), "{a}");
    }

    /// The daemon shares these across tasks and spawns their futures.
    #[test]
    fn mailer_and_outbox_are_shareable_and_their_futures_send() {
        fn shareable<T: Send + Sync>() {}
        fn send<T: Send>(_: &T) {}
        shareable::<Mailer>();
        shareable::<Outbox>();
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let mailer = Mailer::new(&EmailConfig::Folder {
            path: dir.path().join("mail"),
            from: "tw@example.com".into(),
            to: vec!["o@example.com".into()],
        })
        .unwrap();
        send(&outbox.flush(&mailer, jiff::Timestamp::now()));
        let email = Email {
            id: "a".into(),
            token: "t".into(),
            subject: "s".into(),
            text: "x".into(),
            html: "x".into(),
        };
        send(&mailer.send(&email));
    }
}
