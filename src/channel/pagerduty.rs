//! PagerDuty Events API v2: trigger and resolve by dedup_key.
//!
//! (Being written: see the notes. The interface below is fixed.)

use std::time::Duration;

use super::{Alert, ChannelError};
use crate::secret::Secret;

/// A configured PagerDuty receiver.
#[derive(Debug)]
pub struct PagerDuty {
    endpoint: Secret,
    timeout: Duration,
}

impl PagerDuty {
    /// A receiver that posts to `endpoint` (its secret URL or routing key) within `timeout`.
    pub fn new(endpoint: Secret, timeout: Duration) -> PagerDuty {
        PagerDuty { endpoint, timeout }
    }

    /// Posts to `url` instead of PagerDuty's events URL (the EU service, a test receiver).
    #[must_use]
    pub fn with_url(self, url: String) -> PagerDuty {
        let _ = url;
        self
    }

    /// Names `source` as the event's `payload.source` (default: this host's name).
    #[must_use]
    pub fn with_source(self, source: String) -> PagerDuty {
        let _ = source;
        self
    }

    /// The payload for `alert`; `None` when this kind skips it.
    pub fn payload(&self, alert: &Alert) -> Option<serde_json::Value> {
        let _ = (alert, &self.endpoint, self.timeout);
        None
    }

    /// Delivers `alert`.
    ///
    /// # Errors
    /// [`ChannelError`], named by what the queue does next.
    pub async fn send(&self, client: &reqwest::Client, alert: &Alert) -> Result<(), ChannelError> {
        let _ = client;
        match self.payload(alert) {
            None => Ok(()),
            Some(_) => Err(ChannelError::Config("not written yet".into())),
        }
    }
}
