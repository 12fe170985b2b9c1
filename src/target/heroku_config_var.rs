//! The `heroku_config_var` target: one config var of a Heroku app. Heroku restarts the app's
//! dynos itself when a config var changes, so the app runs on the token without a hook.
//!
//! Source: Heroku Platform API reference, "Config Vars"
//! (<https://devcenter.heroku.com/articles/platform-api-reference#config-vars>), API version 3
//! (sent as `Accept: application/vnd.heroku+json; version=3`, the token as
//! `Authorization: Bearer`). `GET /apps/{app_id_or_name}/config-vars` answers every var as a
//! JSON object; `PATCH` on the same path with `{"KEY": "value"}` sets the vars named and leaves
//! the others (a `null` would delete one: never sent). Errors are `{"id", "message"}`
//! (`unauthorized`, `forbidden`, `not_found`, `rate_limit`).
//!
//! A push reads the vars first and writes only when the var does not hold the token already,
//! so a repeated push restarts no dynos. The value is read back after the push and on each
//! drift check.

use reqwest::Method;

use super::TargetError;
use super::rest::Api;
use crate::secret::{Fingerprint, Secret};

/// A Heroku app's config var receiving the token.
#[derive(Debug, Clone)]
pub struct HerokuConfigVar {
    api: Api,
    app: String,
    key: String,
}

impl HerokuConfigVar {
    /// The var `key` of `app`, through the API at `api_url` with `api_token`.
    ///
    /// # Errors
    /// [`TargetError::Refused`] when the URL or the token is refused ([`Api::new`]).
    pub fn new(
        app: String,
        key: String,
        api_url: &reqwest::Url,
        api_token: Secret,
        timeout: std::time::Duration,
    ) -> Result<HerokuConfigVar, TargetError> {
        let denied = format!(
            "the api_token needs the `write-protected` OAuth scope (config vars are protected resources: `heroku authorizations:create --scope write-protected`) and, on a team app, the deploy permission on {app}"
        );
        let api = Api::new("Heroku", api_url, api_token, timeout, denied)?
            .with_header("accept", "application/vnd.heroku+json; version=3");
        Ok(HerokuConfigVar { api, app, key })
    }

    /// The var in words.
    pub fn describe(&self) -> String {
        format!("Heroku config var {} of app {}", self.key, self.app)
    }

    /// Sets the var to `token` unless it holds it already; returns whether it changed.
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a missing app or a refused token (naming the scope);
    /// [`TargetError::Transient`] as [`Api::call`].
    pub async fn push(&self, token: &Secret) -> Result<bool, TargetError> {
        if self.read_back().await? == Some(token.fingerprint()) {
            return Ok(false);
        }
        let mut body = serde_json::Map::new();
        body.insert(self.key.clone(), token.expose().into());
        let answer = self
            .api
            .call(
                Method::PATCH,
                &["apps", &self.app, "config-vars"],
                &[],
                Some(&serde_json::Value::Object(body)),
                &[token],
            )
            .await?;
        self.not_found(&answer)?;
        answer.ok(&self.api, "PATCH config-vars")?;
        Ok(true)
    }

    /// The fingerprint of the token the var holds, `None` when the app has no such var.
    ///
    /// # Errors
    /// As [`HerokuConfigVar::push`].
    pub async fn read_back(&self) -> Result<Option<Fingerprint>, TargetError> {
        let answer = self
            .api
            .call(
                Method::GET,
                &["apps", &self.app, "config-vars"],
                &[],
                None,
                &[],
            )
            .await?;
        self.not_found(&answer)?;
        let vars = answer.ok(&self.api, "GET config-vars")?;
        Ok(vars[&self.key]
            .as_str()
            .map(|v| Secret::new(v).fingerprint()))
    }

    fn not_found(&self, answer: &super::rest::Answer) -> Result<(), TargetError> {
        if answer.status.as_u16() == 404 {
            return Err(TargetError::Refused(format!(
                "{}: Heroku answered 404: {} (no such app, or the api_token's account cannot see it)",
                self.describe(),
                answer.message
            )));
        }
        Ok(())
    }
}
