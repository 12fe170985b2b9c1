//! The `render_env_var` target: one environment variable of a Render service, then a deploy
//! that must go live within the target's timeout (Render applies a variable to new deploys).
//!
//! Source: Render API reference (<https://api-docs.render.com/reference>), API `v1` (the base
//! URL's path, `https://api.render.com/v1`), the API key as `Authorization: Bearer`:
//! - `PUT /services/{serviceId}/env-vars/{envVarKey}` with `{"value": …}`: adds or updates that
//!   one variable, the others untouched; 200 with `{key, value}`;
//! - `GET /services/{serviceId}/env-vars/{envVarKey}`: `{key, value}`, 404 when not set;
//! - `POST /services/{serviceId}/deploys` with `{"clearCache": "do_not_clear"}`: 201 with the
//!   deploy's `id` and `status`; `GET /services/{serviceId}/deploys/{deployId}` until `status`
//!   is `live`. `build_failed`, `update_failed`, `pre_deploy_failed`, `canceled` and
//!   `deactivated` end it: the target fails and the rollout puts the old token back (a
//!   rollback deploys again).
//!
//! Errors are `{"id", "message"}`. The value is read back after the push and on each drift
//! check; a repeated push of the same token writes nothing and deploys nothing.

use std::time::Duration;

use reqwest::Method;

use super::TargetError;
use super::rest::Api;
use crate::secret::{Fingerprint, Secret};

/// How often a deploy's status is asked while it is not live yet.
pub const DEPLOY_POLL: Duration = Duration::from_secs(1);

/// Deploy statuses that will never become `live`.
const FAILED: [&str; 5] = [
    "build_failed",
    "update_failed",
    "pre_deploy_failed",
    "canceled",
    "deactivated",
];

/// A Render service's environment variable receiving the token.
#[derive(Debug, Clone)]
pub struct RenderEnvVar {
    api: Api,
    service: String,
    key: String,
    deploy: bool,
    timeout: Duration,
}

impl RenderEnvVar {
    /// The variable `key` of `service` (its id, `srv-…`), deployed after a change when
    /// `deploy`, through the API at `api_url`.
    ///
    /// # Errors
    /// [`TargetError::Refused`] when the URL or the key is refused ([`Api::new`]).
    pub fn new(
        service: String,
        key: String,
        deploy: bool,
        api_url: &reqwest::Url,
        api_token: Secret,
        timeout: Duration,
    ) -> Result<RenderEnvVar, TargetError> {
        let denied = format!(
            "the api_token (a Render API key) must belong to a user of the workspace that owns service {service}, with a role that may edit its environment and deploy it"
        );
        let api = Api::new("Render", api_url, api_token, timeout, denied)?;
        Ok(RenderEnvVar {
            api,
            service,
            key,
            deploy,
            timeout,
        })
    }

    /// The variable in words.
    pub fn describe(&self) -> String {
        format!("Render env var {} of service {}", self.key, self.service)
    }

    /// Sets the variable to `token` unless it holds it, then deploys and waits until the deploy
    /// is live; returns whether it changed.
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a missing service, a refused key or a failed deploy;
    /// [`TargetError::Transient`] as [`Api::call`].
    pub async fn push(&self, token: &Secret) -> Result<bool, TargetError> {
        let started = tokio::time::Instant::now();
        if self.read_back().await? == Some(token.fingerprint()) {
            return Ok(false);
        }
        let answer = self
            .api
            .call(
                Method::PUT,
                &["services", &self.service, "env-vars", &self.key],
                &[],
                Some(&serde_json::json!({ "value": token.expose() })),
                &[token],
            )
            .await?;
        if answer.status.as_u16() == 404 {
            return Err(TargetError::Refused(format!(
                "{}: Render answered 404: {} (no such service, or the api_token's user cannot see it)",
                self.describe(),
                answer.message
            )));
        }
        answer.ok(&self.api, "PUT env-var")?;
        if self.deploy {
            self.deploy(started).await?;
        }
        Ok(true)
    }

    /// Triggers a deploy and waits until it is live, until `started` plus the target's timeout
    /// (less a second, so that the error says where the deploy stands).
    async fn deploy(&self, started: tokio::time::Instant) -> Result<(), TargetError> {
        let deadline = started + self.timeout.saturating_sub(Duration::from_secs(1));
        let started = self
            .api
            .call(
                Method::POST,
                &["services", &self.service, "deploys"],
                &[],
                Some(&serde_json::json!({ "clearCache": "do_not_clear" })),
                &[],
            )
            .await?
            .ok(&self.api, "POST deploys")?;
        let Some(id) = started["id"].as_str().map(str::to_string) else {
            return Err(TargetError::Refused(format!(
                "{}: the deploy answer has no `id`",
                self.describe()
            )));
        };
        let mut status = started["status"].as_str().unwrap_or("").to_string();
        loop {
            if status == "live" {
                return Ok(());
            }
            if FAILED.contains(&status.as_str()) {
                return Err(TargetError::Refused(format!(
                    "{}: deploy {id} ended {status}; see the deploy's logs on Render",
                    self.describe()
                )));
            }
            if tokio::time::Instant::now() + DEPLOY_POLL >= deadline {
                return Err(TargetError::Refused(format!(
                    "{}: deploy {id} was not live within {}: still {}",
                    self.describe(),
                    super::exec::human(self.timeout),
                    if status.is_empty() {
                        "without a status"
                    } else {
                        &status
                    }
                )));
            }
            tokio::time::sleep(DEPLOY_POLL).await;
            let now = self
                .api
                .call(
                    Method::GET,
                    &["services", &self.service, "deploys", &id],
                    &[],
                    None,
                    &[],
                )
                .await?
                .ok(&self.api, "GET deploy")?;
            status = now["status"].as_str().unwrap_or("").to_string();
            tracing::debug!(service = %self.service, deploy = %id, %status, "waiting for the deploy to go live");
        }
    }

    /// The fingerprint of the token the variable holds, `None` when it is not set.
    ///
    /// # Errors
    /// As [`RenderEnvVar::push`].
    pub async fn read_back(&self) -> Result<Option<Fingerprint>, TargetError> {
        let answer = self
            .api
            .call(
                Method::GET,
                &["services", &self.service, "env-vars", &self.key],
                &[],
                None,
                &[],
            )
            .await?;
        if answer.status.as_u16() == 404 {
            return Ok(None);
        }
        let v = answer.ok(&self.api, "GET env-var")?;
        Ok(v["value"].as_str().map(|v| Secret::new(v).fingerprint()))
    }
}
