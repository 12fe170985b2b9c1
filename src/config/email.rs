//! The `[email]` section: where on-call email goes (SMTP or a folder of `.eml` files), typed
//! and checked here like every other section, so `config` never depends on `notify`
//! (`notify` builds its mailers from this).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use lettre::message::Mailbox;
use lettre::transport::smtp::client::Certificate;
use serde::{Deserialize, Serialize};

use super::SecretRef;

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

    /// How logs and errors name the mode.
    pub fn label(self) -> &'static str {
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
        if let Err(e) = parse_mailbox(from) {
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
            if let Err(e) = parse_mailbox(addr) {
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
                    if let Err(e) = read_ca_file(path) {
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
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parses `"Name <a@b>"` or `a@b`, with a message fit for a config check.
pub fn parse_mailbox(text: &str) -> Result<Mailbox, String> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("{text:?} is not an email address ({e})"))
}

/// Reads an extra root certificate (PEM) for SMTP, with a message fit for a config check.
pub fn read_ca_file(path: &Path) -> Result<Certificate, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "`{}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Certificate::from_pem(&pem)
        .map_err(|e| format!("`{}` is not a valid PEM certificate: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
