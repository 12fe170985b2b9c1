//! Slack incoming webhooks: a Block Kit message.
//!
//! (Being written: see the notes. The interface below is fixed.)

use std::time::Duration;

use super::{Alert, ChannelError};
use crate::secret::Secret;

/// A configured Slack receiver.
#[derive(Debug)]
pub struct Slack {
    endpoint: Secret,
    timeout: Duration,
}

impl Slack {
    /// A receiver that posts to `endpoint` (its secret URL or routing key) within `timeout`.
    pub fn new(endpoint: Secret, timeout: Duration) -> Slack {
        Slack { endpoint, timeout }
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
