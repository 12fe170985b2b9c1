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

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::SecretRef;

pub use folder::FolderMailer;
pub use outbox::{
    BACKOFF_BASE, BACKOFF_CAP, Backlog, FlushReport, Outbox, OutboxEntry, SENT_RETENTION,
};
pub use smtp::SmtpMailer;

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
    /// Whether `id` is usable as an email id: 1 to 128 of `a-z`, `0-9` and `-`.
    ///
    /// The id becomes a file name and a Message-ID, so nothing else is allowed.
    pub fn valid_id(id: &str) -> bool {
        (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587 by default).
    #[default]
    Starttls,
    /// TLS from the first byte, "SMTPS" (port 465 by default).
    Implicit,
    /// No TLS at all: only allowed to a loopback relay (port 25 by default).
    None,
}

impl Tls {
    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            Tls::Starttls => 587,
            Tls::Implicit => 465,
            Tls::None => 25,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Tls::Starttls => "STARTTLS",
            Tls::Implicit => "implicit TLS",
            Tls::None => "no TLS",
        }
    }
}

/// The `[email]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmailConfig {
    /// Deliver through an SMTP server.
    Smtp {
        /// Server host name (checked against its certificate) or IP address.
        host: String,
        /// Port; default 587 for STARTTLS, 465 for implicit TLS, 25 without TLS.
        port: Option<u16>,
        /// `"starttls"` (default), `"implicit"` or `"none"` (loopback only).
        #[serde(default)]
        tls: Tls,
        /// Login name; no authentication when absent.
        username: Option<String>,
        /// Where the password lives (never inline).
        password: Option<SecretRef>,
        /// The sender, `"tokenwarden <tokenwarden@example.com>"` or a bare address.
        from: String,
        /// Recipients, all in one `To` header.
        to: Vec<String>,
        /// An extra trusted root certificate (PEM), for a server with a private CA. The
        /// platform's roots stay trusted.
        ca_file: Option<PathBuf>,
        /// The longest one delivery may take, connection included, such as `"30s"`
        /// (default 30 s).
        timeout: Option<String>,
    },
    /// Write each email as `<id>.eml` into a directory: the demo and dry runs.
    Folder {
        /// The directory; created if missing.
        path: PathBuf,
        /// The sender.
        from: String,
        /// Recipients.
        to: Vec<String>,
    },
}

/// Default SMTP timeout.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl EmailConfig {
    /// Problems a config check must report, as (field relative to `email`, message): plain
    /// text to a host that is not loopback, a password without a username, no recipients,
    /// addresses that do not parse, an unreadable `ca_file`, a bad timeout. Reads `ca_file`
    /// but resolves no secret and opens no connection.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let (from, to) = match self {
            EmailConfig::Smtp { from, to, .. } | EmailConfig::Folder { from, to, .. } => (from, to),
        };
        if let Err(e) = message::parse_mailbox(from) {
            out.push(("from".to_string(), e));
        }
        if to.is_empty() {
            out.push((
                "to".to_string(),
                "no recipients: list at least one address, e.g. to = [\"oncall@example.com\"]"
                    .to_string(),
            ));
        }
        for (i, addr) in to.iter().enumerate() {
            if let Err(e) = message::parse_mailbox(addr) {
                out.push((format!("to[{i}]"), e));
            }
        }
        match self {
            EmailConfig::Folder { path, .. } => {
                if path.as_os_str().is_empty() {
                    out.push(("path".to_string(), "must not be empty".to_string()));
                }
            }
            EmailConfig::Smtp {
                host,
                port,
                tls,
                username,
                password,
                ca_file,
                timeout,
                ..
            } => {
                if host.trim().is_empty() {
                    out.push(("host".to_string(), "must not be empty".to_string()));
                } else if *tls == Tls::None && !is_loopback_host(host) {
                    out.push((
                        "tls".to_string(),
                        format!(
                            "tls = \"none\" sends the password and the emails in plain text, \
                             so it is only allowed to a relay on this machine (localhost, \
                             127.0.0.1, ::1), not to `{host}`; use \"starttls\" or \"implicit\""
                        ),
                    ));
                }
                if *port == Some(0) {
                    out.push(("port".to_string(), "0 is not a port".to_string()));
                }
                match username {
                    Some(u) if u.is_empty() => {
                        out.push(("username".to_string(), "must not be empty".to_string()))
                    }
                    None if password.is_some() => out.push((
                        "password".to_string(),
                        "a password without a username is never sent; add `username`".to_string(),
                    )),
                    _ => {}
                }
                if let Some(path) = ca_file {
                    if *tls == Tls::None {
                        out.push((
                            "ca_file".to_string(),
                            "has no effect with tls = \"none\"".to_string(),
                        ));
                    }
                    if let Err(e) = smtp::read_ca_file(path) {
                        out.push(("ca_file".to_string(), e));
                    }
                }
                if let Some(t) = timeout
                    && crate::config::parse_duration(t).is_none_or(|d| d.is_zero())
                {
                    out.push((
                        "timeout".to_string(),
                        format!("expected a duration such as \"30s\" or \"2m\", found {t:?}"),
                    ));
                }
            }
        }
        out
    }
}

/// `localhost`, `127.x.x.x` or `::1` (with or without brackets).
fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

    #[test]
    fn ports_default_by_tls_mode_and_loopback_is_recognised() {
        assert_eq!(Tls::default(), Tls::Starttls);
        assert_eq!(
            [Tls::Starttls, Tls::Implicit, Tls::None].map(Tls::default_port),
            [587, 465, 25]
        );
        for h in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "localhost.example.com", "::2"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
