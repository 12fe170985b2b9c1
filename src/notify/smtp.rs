//! SMTP delivery through lettre: STARTTLS or implicit TLS (plain text only to loopback),
//! optional AUTH, an extra trusted root, and errors mapped to what the caller does next.

use std::sync::Mutex;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls as LettreTls, TlsParameters};
use lettre::transport::smtp::{AsyncSmtpTransportBuilder, Error as SmtpError};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{DEFAULT_TIMEOUT, Email, EmailConfig, NotifyError, SendFailure, Tls, message};
use crate::secret::Secret;

/// Delivers through an SMTP server. `Debug` shows where, never the password.
pub struct SmtpMailer {
    host: String,
    port: u16,
    tls: Tls,
    username: Option<String>,
    /// Kept only to scrub it from any error text a server might echo back.
    password: Option<Secret>,
    /// The password in every form a server may echo it in (base64 inside `AUTH PLAIN`'s
    /// `\0user\0password`, or alone after `AUTH LOGIN`).
    scrubber: crate::scrub::Scrubber,
    from: Mailbox,
    to: Vec<Mailbox>,
    builder: AsyncSmtpTransportBuilder,
    /// The longest one delivery may take, connection included.
    timeout: Duration,
    /// Built on first use, because lettre's connection pool starts a task on the current
    /// Tokio runtime and [`super::Mailer::new`] may run outside one (a config check).
    /// Dropped after a timeout: lettre would put the interrupted connection back in its pool.
    transport: Mutex<Option<AsyncSmtpTransport<Tokio1Executor>>>,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

use crate::config::email::read_ca_file;

impl SmtpMailer {
    /// Builds the mailer from an `EmailConfig::Smtp` whose problems were already checked.
    pub(super) fn new(cfg: &EmailConfig) -> Result<SmtpMailer, NotifyError> {
        let EmailConfig::Smtp {
            host,
            port,
            tls,
            username,
            password,
            from,
            to,
            ca_file,
            timeout,
        } = cfg
        else {
            return Err(NotifyError::Config("not an SMTP config".into()));
        };
        let host = host.trim().to_string();
        let port = port.unwrap_or(tls.default_port());
        let (from, to) = message::parse_addresses(from, to)?;
        let timeout = timeout
            .as_deref()
            .and_then(crate::config::parse_duration)
            .unwrap_or(DEFAULT_TIMEOUT);
        let password = password
            .as_ref()
            .map(|r| {
                r.resolve()
                    .map_err(|e| NotifyError::Config(format!("email.password ({r}): {e}")))
            })
            .transpose()?;

        // Certificates are checked against the name we connect to; brackets are URL syntax.
        let server_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let lettre_tls = match tls {
            Tls::None => LettreTls::None,
            Tls::Starttls | Tls::Implicit => {
                let mut params = TlsParameters::builder(server_name.clone());
                if let Some(path) = ca_file {
                    params = params.add_root_certificate(
                        read_ca_file(path)
                            .map_err(|e| NotifyError::Config(format!("email.ca_file: {e}")))?,
                    );
                }
                let params = params.build_rustls().map_err(|e| {
                    NotifyError::Config(format!("TLS setup for {host}: {}", chain(&e)))
                })?;
                if *tls == Tls::Starttls {
                    LettreTls::Required(params)
                } else {
                    LettreTls::Wrapper(params)
                }
            }
        };
        // `builder_dangerous` only means "you choose the TLS mode": it is chosen above, and
        // only a loopback host may get `Tls::None` (see `EmailConfig::problems`).
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server_name)
            .port(port)
            .tls(lettre_tls)
            .timeout(Some(timeout));
        if let Some(user) = username {
            let pw = password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), pw));
        }
        let mut scrubber = crate::scrub::Scrubber::new();
        if let Some(p) = &password {
            scrubber.add(p.expose());
        }
        Ok(SmtpMailer {
            host,
            port,
            tls: *tls,
            username: username.clone(),
            password,
            scrubber,
            from,
            to,
            builder,
            timeout,
            transport: Mutex::new(None),
        })
    }

    /// `SMTP host:port (STARTTLS) to a@x, b@y`, with the login name when there is one.
    pub fn describe(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        let user = match &self.username {
            Some(u) => format!(" as {u}"),
            None => String::new(),
        };
        format!(
            "SMTP {}:{} ({}){user} to {}",
            self.host,
            self.port,
            self.tls.label(),
            to.join(", ")
        )
    }

    pub(super) async fn send(&self, email: &Email) -> Result<(), SendFailure> {
        let msg = message::build(email, &self.from, &self.to).map_err(|error| SendFailure {
            error,
            server_wide: false,
        })?;
        let transport = {
            let mut slot = self.transport.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| self.builder.clone().build::<Tokio1Executor>())
                .clone()
        };
        // lettre's own timeout covers only the TCP connect; a server that stalls later
        // (TLS handshake, a reply that never comes) would hold the flush forever.
        match tokio::time::timeout(self.timeout, transport.send(msg)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => {
                *self.transport.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Err(SendFailure {
                    error: NotifyError::Transient(format!(
                        "{}:{}: no answer within {:?}",
                        self.host, self.port, self.timeout
                    )),
                    server_wide: true,
                })
            }
        }
    }

    /// Maps a lettre error to what the caller does next.
    fn classify(&self, e: &SmtpError) -> SendFailure {
        let text = self.scrub(format!("{}:{}: {}", self.host, self.port, chain(e)));
        let code = e.status().map(|c| c.to_string());
        if e.is_permanent() {
            // 530/534/535: the server refused to log in (or demands a login): the username
            // or password is wrong, which no retry fixes and no other email escapes.
            if matches!(code.as_deref(), Some("530" | "534" | "535")) {
                let who = self
                    .username
                    .as_deref()
                    .unwrap_or("(no username configured)");
                return SendFailure {
                    error: NotifyError::Config(format!("login as {who} refused: {text}")),
                    server_wide: true,
                };
            }
            return SendFailure {
                error: NotifyError::Rejected(text),
                server_wide: false,
            };
        }
        if e.is_transient() {
            // 421 closes the session: nothing else gets through now either.
            return SendFailure {
                error: NotifyError::Transient(text),
                server_wide: code.as_deref() == Some("421"),
            };
        }
        if e.is_client() {
            // lettre refuses on its own: no STARTTLS offered, no usable AUTH mechanism.
            return SendFailure {
                error: NotifyError::Config(text),
                server_wide: true,
            };
        }
        // Connection refused, DNS, timeout, TLS handshake, a garbled reply, a shut-down
        // transport: all about reaching the server, all worth another try later.
        SendFailure {
            error: NotifyError::Transient(text),
            server_wide: true,
        }
    }

    /// Removes the password from text that came from the network, in case a server echoes it:
    /// as is, URL-encoded or base64 ([`crate::scrub`]), and a password too short for that
    /// module's forms as is.
    fn scrub(&self, text: String) -> String {
        let text = self.scrubber.scrub(&text);
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.expose(), crate::scrub::REDACTED),
            _ => text,
        }
    }
}

/// An error and its sources, `outer: inner: innermost`, skipping repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}
