//! Verifying a target after delivery (optional, per target): proof that the app runs on the
//! new token, either an HTTP GET that must answer 2xx or a command that must exit 0.
//!
//! The app may be restarting when the check starts, so a URL is polled about once a second
//! until it answers 2xx or the time allowed runs out; only the last answer counts. A command
//! runs once, through [`exec::run`] (no standard input, the same cleared environment, killed
//! with its process group when the time runs out).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::TargetError;
use super::exec::{self, human};
use super::webhook::{error_chain, place};
use crate::secret::Secret;

/// How often a URL is asked again.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// How a target proves it took the token.
#[derive(Clone, PartialEq, Eq)]
pub enum Verify {
    /// A GET that must answer 2xx.
    Url(reqwest::Url),
    /// An argv (no shell) that must exit 0.
    Command(Vec<String>),
}

impl fmt::Debug for Verify {
    /// A URL by host only: its path or query may hold a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::Url(url) => f.debug_tuple("Url").field(&place(url)).finish(),
            Verify::Command(argv) => f.debug_tuple("Command").field(argv).finish(),
        }
    }
}

impl Verify {
    /// Checks the target within `within`. A URL is asked with `client` at once and then about
    /// every second; each request may take the time that is left (at least a second), so the
    /// check ends at most a second after `within`.
    ///
    /// # Errors
    /// For a URL that never answered 2xx: [`TargetError::Refused`] when the last answer was a
    /// 3xx or a 4xx other than 408 and 429 (the app is up and says no: a wrong URL, a refused
    /// token), [`TargetError::Transient`] when it was a 5xx, 408, 429, a timeout or no
    /// connection (the app may still be starting). Errors name the status, and the host but
    /// not the URL. For a command, as [`exec::run`].
    pub async fn check(
        &self,
        client: &reqwest::Client,
        within: Duration,
    ) -> Result<(), TargetError> {
        self.check_hiding(client, within, &[]).await
    }

    /// [`Verify::check`], with `hide` scrubbed from a command's output (the command gets no
    /// token, yet may print one it reads from the application's files).
    ///
    /// # Errors
    /// As [`Verify::check`].
    pub async fn check_hiding(
        &self,
        client: &reqwest::Client,
        within: Duration,
        hide: &[&Secret],
    ) -> Result<(), TargetError> {
        match self {
            Verify::Url(url) => poll(client, url, within).await,
            Verify::Command(argv) => exec::run_hiding(argv, None, &[], within, hide)
                .await
                .map(drop),
        }
    }
}

/// The last failed answer of a poll.
enum Last {
    Status(reqwest::StatusCode),
    Error(String),
}

async fn poll(
    client: &reqwest::Client,
    url: &reqwest::Url,
    within: Duration,
) -> Result<(), TargetError> {
    let deadline = Instant::now() + within;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(POLL_EVERY);
        let last = match client.get(url.clone()).timeout(left).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => Last::Status(resp.status()),
            Err(e) if e.is_timeout() => Last::Error("no answer in time".into()),
            Err(e) => Last::Error(error_chain(e.without_url())),
        };
        let now = Instant::now();
        if now >= deadline {
            let head = format!(
                "verify {}: no 2xx within {} ({tries} tr{})",
                place(url),
                human(within),
                if tries == 1 { "y" } else { "ies" }
            );
            return Err(match last {
                Last::Status(s)
                    if s.is_redirection()
                        || (s.is_client_error() && s.as_u16() != 408 && s.as_u16() != 429) =>
                {
                    TargetError::Refused(format!("{head}; the last answer was {s}"))
                }
                Last::Status(s) => {
                    TargetError::Transient(format!("{head}; the last answer was {s}"))
                }
                Last::Error(e) => TargetError::Transient(format!("{head}; last: {e}")),
            });
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_a_url_by_host_only() {
        let v = Verify::Url(
            "https://app.example:8443/health?key=verify-canary"
                .parse()
                .unwrap(),
        );
        let shown = format!("{v:?}");
        assert_eq!(shown, "Url(\"app.example:8443\")");
        let c = Verify::Command(vec!["curl".into(), "-f".into()]);
        assert_eq!(format!("{c:?}"), "Command([\"curl\", \"-f\"])");
    }
}
