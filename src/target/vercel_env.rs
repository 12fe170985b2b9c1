//! The `vercel_env` target: one environment variable of a Vercel project, for the chosen
//! environments (`production`, `preview`, `development`), optionally followed by a redeploy of
//! the latest production deployment (Vercel applies a variable to new deployments only).
//!
//! Source: Vercel REST API reference (<https://vercel.com/docs/rest-api>), the endpoints'
//! versions as the reference numbers them, the token as `Authorization: Bearer`, `teamId` in
//! the query for a team's project:
//! - `GET /v10/projects/{idOrName}/env`: the variables (values encrypted) with their `id`,
//!   `key` and `target`; then `GET /v1/projects/{idOrName}/env/{id}`: one variable decrypted
//!   (`decrypted: true`, `value`) unless it is of type `sensitive`;
//! - `PATCH /v9/projects/{idOrName}/env/{id}` with `{value, type: "encrypted"}`: edits one
//!   existing variable by id;
//! - `POST /v10/projects/{idOrName}/env?upsert=true` with `{key, value, type: "encrypted",
//!   target: [...]}`: creates the variable for environments no entry covers yet; 201 with
//!   `{created, failed}` (a non-empty `failed` is a refusal);
//! - redeploy: `GET /v6/deployments?projectId=…&target=production&limit=1`, then
//!   `POST /v13/deployments` with `{name, deploymentId, target: "production"}`.
//!
//! A project often holds one entry of a key per environment, or one for several: a push edits
//! by id each entry of the key that covers a chosen environment and does not hold the token
//! (an entry that also covers another environment changes there too), and creates one for the
//! chosen environments no entry covers. `upsert` alone is not used for existing entries: which
//! entry it updates when several share the key is not specified. Errors are
//! `{"error": {"code", "message"}}`. The variable is written as `encrypted`, which
//! the API decrypts for a token allowed to read it, so it is read back after the push and on
//! each drift check: the value of every chosen environment must be the token. One that holds
//! another value, none, or a `sensitive` (unreadable) one reads as not holding it, and is
//! pushed again.

use reqwest::Method;

use super::TargetError;
use super::rest::Api;
use crate::secret::{Fingerprint, Secret};

/// One entry of the key: its id, its environments, the token it holds if readable.
#[derive(Debug)]
struct Entry {
    id: String,
    target: Vec<String>,
    value: Option<Fingerprint>,
}

/// A Vercel project's environment variable receiving the token.
#[derive(Debug, Clone)]
pub struct VercelEnv {
    api: Api,
    project: String,
    key: String,
    environments: Vec<String>,
    team_id: Option<String>,
    redeploy: bool,
}

impl VercelEnv {
    /// The variable `key` of `project` for `environments`, through the API at `api_url`.
    ///
    /// # Errors
    /// [`TargetError::Refused`] when the URL or the token is refused ([`Api::new`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        project: String,
        key: String,
        environments: Vec<String>,
        team_id: Option<String>,
        redeploy: bool,
        api_url: &reqwest::Url,
        api_token: Secret,
        timeout: std::time::Duration,
    ) -> Result<VercelEnv, TargetError> {
        let denied = format!(
            "the api_token must be scoped to the team that owns project {project} and created by a member who may edit its environment variables{}",
            if redeploy { " and deploy it" } else { "" }
        );
        let api = Api::new("Vercel", api_url, api_token, timeout, denied)?;
        Ok(VercelEnv {
            api,
            project,
            key,
            environments,
            team_id,
            redeploy,
        })
    }

    /// The variable in words.
    pub fn describe(&self) -> String {
        format!(
            "Vercel env {} of project {} ({})",
            self.key,
            self.project,
            self.environments.join(", ")
        )
    }

    fn query<'a>(&'a self, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut q = more.to_vec();
        if let Some(t) = &self.team_id {
            q.push(("teamId", t));
        }
        q
    }

    /// Sets the variable for every chosen environment that does not hold `token` (see the
    /// module docs), then redeploys if asked; returns whether it changed.
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a missing project, a refused token, an answer listing the
    /// variable as failed, or no production deployment to redeploy;
    /// [`TargetError::Transient`] as [`Api::call`].
    pub async fn push(&self, token: &Secret) -> Result<bool, TargetError> {
        let entries = self.entries().await?;
        let fp = token.fingerprint();
        let uncovered: Vec<&String> = self
            .environments
            .iter()
            .filter(|e| !entries.iter().any(|x| x.target.contains(e)))
            .collect();
        let stale: Vec<&Entry> = entries.iter().filter(|x| x.value != Some(fp)).collect();
        if uncovered.is_empty() && stale.is_empty() {
            return Ok(false);
        }
        for entry in stale {
            self.api
                .call(
                    Method::PATCH,
                    &["v9", "projects", &self.project, "env", &entry.id],
                    &self.query(&[]),
                    Some(&serde_json::json!({"value": token.expose(), "type": "encrypted"})),
                    &[token],
                )
                .await?
                .ok(&self.api, "PATCH env")?;
        }
        if !uncovered.is_empty() {
            self.create(token, &uncovered).await?;
        }
        if self.redeploy {
            self.redeploy().await?;
        }
        Ok(true)
    }

    /// Creates the variable for `environments`.
    async fn create(&self, token: &Secret, environments: &[&String]) -> Result<(), TargetError> {
        let body = serde_json::json!({
            "key": self.key,
            "value": token.expose(),
            "type": "encrypted",
            "target": environments,
        });
        let answer = self
            .api
            .call(
                Method::POST,
                &["v10", "projects", &self.project, "env"],
                &self.query(&[("upsert", "true")]),
                Some(&body),
                &[token],
            )
            .await?;
        self.not_found(&answer)?;
        let out = answer.ok(&self.api, "POST env")?;
        if let Some(failed) = out["failed"].as_array().filter(|f| !f.is_empty()) {
            let why = failed[0]["error"]["message"]
                .as_str()
                .or(failed[0]["error"]["code"].as_str())
                .unwrap_or("no reason given");
            return Err(TargetError::Refused(format!(
                "{}: Vercel did not set it: {}",
                self.describe(),
                crate::scrub::Scrubber::new().add(token.expose()).scrub(why)
            )));
        }
        Ok(())
    }

    /// Redeploys the latest production deployment, so it runs on the new value.
    async fn redeploy(&self) -> Result<(), TargetError> {
        let answer = self
            .api
            .call(
                Method::GET,
                &["v6", "deployments"],
                &self.query(&[
                    ("projectId", &self.project),
                    ("target", "production"),
                    ("limit", "1"),
                ]),
                None,
                &[],
            )
            .await?;
        let list = answer.ok(&self.api, "GET deployments")?;
        let Some(uid) = list["deployments"][0]["uid"].as_str() else {
            return Err(TargetError::Refused(format!(
                "{}: no production deployment to redeploy (deploy the project once, or set redeploy = false)",
                self.describe()
            )));
        };
        let body = serde_json::json!({
            "name": self.project,
            "deploymentId": uid,
            "target": "production",
        });
        let answer = self
            .api
            .call(
                Method::POST,
                &["v13", "deployments"],
                &self.query(&[]),
                Some(&body),
                &[],
            )
            .await?;
        answer.ok(&self.api, "POST deployments (redeploy)")?;
        Ok(())
    }

    /// The fingerprint of the token every chosen environment holds; `None` when one holds no
    /// value, another value than the others, or a value the API will not decrypt.
    ///
    /// # Errors
    /// As [`VercelEnv::push`].
    pub async fn read_back(&self) -> Result<Option<Fingerprint>, TargetError> {
        let entries = self.entries().await?;
        let mut found: Option<Fingerprint> = None;
        for wanted in &self.environments {
            let mut values = entries
                .iter()
                .filter(|x| x.target.contains(wanted))
                .map(|x| x.value);
            let Some(Some(fp)) = values.next() else {
                return Ok(None);
            };
            if values.any(|v| v != Some(fp)) || found.is_some_and(|f| f != fp) {
                return Ok(None);
            }
            found = Some(fp);
        }
        Ok(found)
    }

    /// The entries of the key that cover a chosen environment, each decrypted.
    async fn entries(&self) -> Result<Vec<Entry>, TargetError> {
        let answer = self
            .api
            .call(
                Method::GET,
                &["v10", "projects", &self.project, "env"],
                &self.query(&[]),
                None,
                &[],
            )
            .await?;
        self.not_found(&answer)?;
        let list = answer.ok(&self.api, "GET env")?;
        let envs = list["envs"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        for e in envs.iter().filter(|e| e["key"] == self.key.as_str()) {
            let target: Vec<String> = e["target"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if !target.iter().any(|t| self.environments.contains(t)) {
                continue;
            }
            let Some(id) = e["id"].as_str() else {
                continue;
            };
            let one = self
                .api
                .call(
                    Method::GET,
                    &["v1", "projects", &self.project, "env", id],
                    &self.query(&[]),
                    None,
                    &[],
                )
                .await?
                .ok(&self.api, "GET env by id")?;
            let value = one["value"]
                .as_str()
                .filter(|_| one["decrypted"] == true)
                .map(|v| Secret::new(v).fingerprint());
            out.push(Entry {
                id: id.to_string(),
                target,
                value,
            });
        }
        Ok(out)
    }

    fn not_found(&self, answer: &super::rest::Answer) -> Result<(), TargetError> {
        if answer.status.as_u16() == 404 {
            return Err(TargetError::Refused(format!(
                "{}: Vercel answered 404: {} (no such project{})",
                self.describe(),
                answer.message,
                if self.team_id.is_none() {
                    "; a team's project needs `team_id`"
                } else {
                    " in that team"
                }
            )));
        }
        Ok(())
    }
}
