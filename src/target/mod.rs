//! Targets: the environments a token is delivered to (`dotenv` files, other Secrets Manager
//! secrets, webhooks, commands, and platforms: SSM parameters, GitHub Actions secrets, Heroku
//! config vars, Vercel and Render environment variables, Kubernetes Secrets), and how each is
//! verified. The HTTP platforms share `rest`'s client; Kubernetes goes through `kube`.
//!
//! One module per kind. [`TargetError`] says what the caller does next: retry (transient),
//! or stop the rollout and tell on-call (refused).

pub mod aws_secret;
pub mod dotenv;
#[cfg(test)]
mod dotenv_parsers;
pub mod exec;
pub mod github_actions_secret;
pub mod heroku_config_var;
pub mod kubernetes_secret;
pub mod render_env_var;
pub mod rest;
pub mod ssm_parameter;
pub mod vercel_env;
pub mod verify;
pub mod webhook;

/// Why a target could not take (or give back) a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// It may work if tried again (a timeout, a 5xx, a network error).
    #[error("{0}")]
    Transient(String),
    /// It will not work until someone fixes the target (a refused path, a 4xx, exit status 1).
    #[error("{0}")]
    Refused(String),
}

use jiff::Timestamp;

use crate::config::{TargetConfig, TargetKind, VerifyConfig};
use crate::secret::{Fingerprint, Secret};

/// Where a dotenv target notes its `reload` command starting and finishing, so that a run
/// killed while the command runs (a cgroup stop) runs it again when it resumes, instead of
/// seeing the file already on the new token and skipping it. The rotation record keeps it.
pub trait ReloadJournal: Send + Sync + std::fmt::Debug {
    /// Whether a reload of `target` started and never finished.
    fn unfinished(&self, target: &str) -> bool;
    /// Notes that the reload of `target` starts; saved before the command runs.
    ///
    /// # Errors
    /// [`TargetError::Transient`] when the note cannot be saved (the command is not run).
    fn started(&self, target: &str) -> Result<(), TargetError>;
    /// Notes that the reload of `target` exited (whatever its status).
    fn finished(&self, target: &str);
}

/// Why a token is pushed to a target: in a webhook's body, a push's request token, the target
/// log (`targets/<token>.json`) and the audit log, always as its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushEvent {
    /// A rotation delivers its candidate.
    Rotation,
    /// A failed rollout puts the old token back.
    Rollback,
    /// The drift check found a target changed behind tokenwarden's back.
    Drift,
    /// The drift check brings a target up to the current token (a first push, or a retry).
    Sync,
}

impl PushEvent {
    /// The event's word.
    pub fn word(self) -> &'static str {
        match self {
            PushEvent::Rotation => "rotation",
            PushEvent::Rollback => "rollback",
            PushEvent::Drift => "drift",
            PushEvent::Sync => "sync",
        }
    }
}

/// What a push is about, for bodies, request tokens and records.
#[derive(Debug, Clone)]
pub struct PushContext {
    /// The token's name in the config.
    pub token_name: String,
    /// When the pushed token expires (for webhook bodies).
    pub expires_at: Option<Timestamp>,
    /// Why the token is pushed.
    pub event: PushEvent,
    /// Makes retried writes idempotent (the rotation id, for example).
    pub request_id: String,
    /// When the push happens.
    pub now: Timestamp,
    /// Where `reload` commands are recorded (a rotation's record), if anywhere.
    pub reloads: Option<std::sync::Arc<dyn ReloadJournal>>,
    /// Other secrets to scrub from a `reload`'s or a verify command's output besides the token
    /// pushed (the other side of a rotation: a script that prints the `.env` may show both).
    pub hide: Vec<Secret>,
}

/// A target built from its config, ready to push.
#[derive(Debug)]
pub struct Configured {
    /// Its configuration.
    pub cfg: TargetConfig,
    target: Target,
    verify: Option<verify::Verify>,
}

#[derive(Debug)]
enum Target {
    Dotenv {
        file: dotenv::DotenvFile,
        key: String,
        reload: Option<Vec<String>>,
    },
    AwsSecret(aws_secret::AwsSecretTarget),
    Webhook(webhook::Webhook),
    Exec(exec::ExecTarget),
    Ssm(ssm_parameter::SsmParameterTarget),
    Github(github_actions_secret::GithubSecretTarget),
    Heroku(heroku_config_var::HerokuConfigVar),
    Vercel(vercel_env::VercelEnv),
    Render(render_env_var::RenderEnvVar),
    Kubernetes(kubernetes_secret::KubernetesSecret),
}

impl Configured {
    /// Builds the target of `cfg`: resolves a webhook's secret or a platform's `api_token`,
    /// connects to Secrets Manager, Parameter Store or the Kubernetes API server.
    ///
    /// # Errors
    /// [`TargetError::Refused`] when a secret reference, a kubeconfig or a service account
    /// cannot be read, or a URL is refused.
    pub async fn open(cfg: &TargetConfig) -> Result<Configured, TargetError> {
        let target = match &cfg.kind {
            TargetKind::Dotenv { path, key, reload } => Target::Dotenv {
                file: dotenv::DotenvFile::new(path.clone()),
                key: key.clone(),
                reload: reload.clone(),
            },
            TargetKind::AwsSecret {
                secret_id,
                region,
                endpoint,
                json_key,
            } => Target::AwsSecret(
                aws_secret::AwsSecretTarget::connect(
                    secret_id,
                    region.as_deref(),
                    endpoint.as_deref(),
                    json_key.clone(),
                )
                .await,
            ),
            TargetKind::Webhook {
                url,
                secret,
                header,
            } => {
                let secret = secret.resolve().map_err(|e| {
                    TargetError::Refused(format!("target {}: `secret`: {e}", cfg.name))
                })?;
                Target::Webhook(
                    webhook::Webhook::new(url.clone(), secret)?
                        .with_header(header)?
                        .with_timeout(cfg.timeout),
                )
            }
            TargetKind::Exec { command } => {
                Target::Exec(exec::ExecTarget::new(command.clone(), cfg.timeout))
            }
            TargetKind::SsmParameter {
                parameter,
                region,
                endpoint,
                kms_key_id,
            } => Target::Ssm(
                ssm_parameter::SsmParameterTarget::connect(
                    parameter,
                    region.as_deref(),
                    endpoint.as_deref(),
                    kms_key_id.clone(),
                    cfg.timeout,
                )
                .await,
            ),
            TargetKind::GithubActionsSecret { scope, name, api } => {
                Target::Github(github_actions_secret::GithubSecretTarget::new(
                    scope.clone(),
                    name.clone(),
                    &api.url,
                    api_token(cfg, api)?,
                    cfg.timeout,
                )?)
            }
            TargetKind::HerokuConfigVar { app, key, api } => {
                Target::Heroku(heroku_config_var::HerokuConfigVar::new(
                    app.clone(),
                    key.clone(),
                    &api.url,
                    api_token(cfg, api)?,
                    cfg.timeout,
                )?)
            }
            TargetKind::VercelEnv {
                project,
                key,
                environments,
                team_id,
                redeploy,
                api,
            } => Target::Vercel(vercel_env::VercelEnv::new(
                project.clone(),
                key.clone(),
                environments.clone(),
                team_id.clone(),
                *redeploy,
                &api.url,
                api_token(cfg, api)?,
                cfg.timeout,
            )?),
            TargetKind::RenderEnvVar {
                service,
                key,
                deploy,
                api,
            } => Target::Render(render_env_var::RenderEnvVar::new(
                service.clone(),
                key.clone(),
                *deploy,
                &api.url,
                api_token(cfg, api)?,
                cfg.timeout,
            )?),
            TargetKind::KubernetesSecret {
                namespace,
                secret_name,
                key,
                kubeconfig,
                context,
                restart,
            } => Target::Kubernetes(
                kubernetes_secret::KubernetesSecret::connect(
                    kubeconfig.as_deref(),
                    context.as_deref(),
                    namespace.clone(),
                    secret_name.clone(),
                    key.clone(),
                    restart.clone(),
                    cfg.timeout,
                )
                .await?,
            ),
        };
        let verify = cfg.verify.as_ref().map(|v| match v {
            VerifyConfig::Url(u) => verify::Verify::Url(u.clone()),
            VerifyConfig::Command(c) => verify::Verify::Command(c.clone()),
        });
        Ok(Configured {
            cfg: cfg.clone(),
            target,
            verify,
        })
    }

    /// The target in words: its name and where it points (never a URL's path or query).
    pub fn describe(&self) -> String {
        let place = match &self.target {
            Target::Dotenv { file, key, .. } => format!("{} in {}", key, file.path().display()),
            Target::AwsSecret(a) => a.describe(),
            Target::Webhook(_) => "webhook".to_string(),
            Target::Exec(e) => format!("command {}", e.command()[0]),
            Target::Ssm(s) => s.describe(),
            Target::Github(g) => g.describe(),
            Target::Heroku(h) => h.describe(),
            Target::Vercel(v) => v.describe(),
            Target::Render(r) => r.describe(),
            Target::Kubernetes(k) => k.describe(),
        };
        format!("target {} ({place})", self.cfg.name)
    }

    /// Whether the token a target holds can be read back (for drift checks).
    pub fn readable(&self) -> bool {
        matches!(
            self.target,
            Target::Dotenv { .. }
                | Target::AwsSecret(_)
                | Target::Ssm(_)
                | Target::Heroku(_)
                | Target::Vercel(_)
                | Target::Render(_)
                | Target::Kubernetes(_)
        )
    }

    /// What `rotate --dry-run` says about reading the target back: how a drift check and a
    /// push's verification see what it holds, or why they cannot.
    pub fn read_back_note(&self) -> &'static str {
        match &self.target {
            Target::Dotenv { .. } => "read back from the file",
            Target::AwsSecret(_) => "read back with GetSecretValue",
            Target::Ssm(_) => "read back with GetParameter (WithDecryption)",
            Target::Heroku(_) => "read back with GET /apps/{app}/config-vars",
            Target::Vercel(_) => {
                "read back decrypted with GET /v1/projects/{project}/env/{id}, every chosen environment; a `sensitive` variable cannot be read and is pushed again"
            }
            Target::Render(_) => "read back with GET /services/{service}/env-vars/{key}",
            Target::Kubernetes(_) => "read back with GET on the Secret",
            Target::Webhook(_) | Target::Exec(_) => {
                "write-only: verified by its verify_url or verify_command only"
            }
            Target::Github(_) => {
                "write-only: GitHub never returns a secret's value; verified by its verify_url or verify_command only"
            }
        }
    }

    /// The file a target writes, if it is a file (kept out of the forgotten-copies search).
    pub fn managed_path(&self) -> Option<std::path::PathBuf> {
        match &self.target {
            Target::Dotenv { file, .. } => Some(file.path().to_path_buf()),
            _ => None,
        }
    }

    /// Puts `token` in place; returns whether anything changed. A dotenv file that changed
    /// runs its `reload` command.
    ///
    /// # Errors
    /// [`TargetError`].
    pub async fn push(&self, token: &Secret, ctx: &PushContext) -> Result<bool, TargetError> {
        match &self.target {
            Target::Dotenv { file, key, reload } => {
                let summary = file.set_key(key, token)?;
                let journal = ctx.reloads.as_deref();
                // An unchanged file still needs its reload when the last one was cut short:
                // the file took the token, the application may never have read it.
                let unfinished = journal.is_some_and(|j| j.unfinished(&self.cfg.name));
                if (summary.changed || unfinished)
                    && let Some(argv) = reload
                {
                    if unfinished && !summary.changed {
                        tracing::warn!(target = %self.cfg.name, "the last reload was interrupted; running it again");
                    }
                    if let Some(j) = journal {
                        j.started(&self.cfg.name)?;
                    }
                    let hide: Vec<&Secret> =
                        std::iter::once(token).chain(ctx.hide.iter()).collect();
                    let ran = exec::run_hiding(argv, None, &[], self.cfg.timeout, &hide).await;
                    if let Some(j) = journal {
                        j.finished(&self.cfg.name);
                    }
                    ran.map_err(|e| prefix("reload", e))?;
                }
                Ok(summary.changed)
            }
            Target::AwsSecret(a) => {
                a.push(token, &request_token(ctx, &self.cfg.name, token))
                    .await
            }
            Target::Webhook(w) => {
                let d = webhook::Delivery {
                    token_name: &ctx.token_name,
                    token,
                    expires_at: ctx.expires_at,
                    event: ctx.event,
                };
                w.push(&d, ctx.now).await.map(|()| true)
            }
            Target::Exec(e) => e
                .push(token, &ctx.token_name, token.fingerprint())
                .await
                .map(|()| true),
            Target::Ssm(s) => s.push(token).await,
            Target::Github(g) => g.push(token).await,
            Target::Heroku(h) => h.push(token).await,
            Target::Vercel(v) => v.push(token).await,
            Target::Render(r) => r.push(token).await,
            Target::Kubernetes(k) => k.push(token).await,
        }
    }

    /// The fingerprint of the token the target holds, when it can be read back (`None` for a
    /// target that cannot be read, or a file without the key).
    ///
    /// # Errors
    /// [`TargetError`] when reading fails.
    pub async fn read_back(&self) -> Result<Option<Fingerprint>, TargetError> {
        match &self.target {
            Target::Dotenv { file, key, .. } => Ok(file.get_key(key)?.map(|s| s.fingerprint())),
            Target::AwsSecret(a) => a.read_back().await.map(Some),
            Target::Ssm(s) => s.read_back().await,
            Target::Heroku(h) => h.read_back().await,
            Target::Vercel(v) => v.read_back().await,
            Target::Render(r) => r.read_back().await,
            Target::Kubernetes(k) => k.read_back().await,
            Target::Webhook(_) | Target::Exec(_) | Target::Github(_) => Ok(None),
        }
    }

    /// Runs only the configured verify (no read-back), as `rotate --dry-run` does against the
    /// current token.
    ///
    /// # Errors
    /// The verify's [`TargetError`].
    pub async fn verify_configured(
        &self,
        http: &reqwest::Client,
        within: std::time::Duration,
    ) -> Result<(), TargetError> {
        match &self.verify {
            Some(v) => v.check(http, within).await,
            None => Ok(()),
        }
    }

    /// Verifies the target holds the token `fp` (read back where possible) and passes its
    /// configured verify within `within`; `hide` is scrubbed from a verify command's output.
    ///
    /// # Errors
    /// [`TargetError`] naming what did not match or the verify's failure.
    pub async fn verify(
        &self,
        fp: Fingerprint,
        http: &reqwest::Client,
        within: std::time::Duration,
        hide: &[&Secret],
    ) -> Result<(), TargetError> {
        if self.readable() {
            match self.read_back().await? {
                Some(found) if found == fp => {}
                found => {
                    return Err(TargetError::Refused(format!(
                        "{} holds {} after the push, not token {fp}",
                        self.describe(),
                        found.map_or("no token".into(), |f| format!("token {f}"))
                    )));
                }
            }
        }
        match &self.verify {
            Some(v) => v
                .check_hiding(http, within, hide)
                .await
                .map_err(|e| prefix("verify", e)),
            None => Ok(()),
        }
    }
}

/// The `api_token` of a platform target, resolved.
fn api_token(cfg: &TargetConfig, api: &crate::config::ApiAccess) -> Result<Secret, TargetError> {
    api.token
        .resolve()
        .map_err(|e| TargetError::Refused(format!("target {}: `api_token`: {e}", cfg.name)))
}

fn prefix(what: &str, e: TargetError) -> TargetError {
    match e {
        TargetError::Transient(m) => TargetError::Transient(format!("{what}: {m}")),
        TargetError::Refused(m) => TargetError::Refused(format!("{what}: {m}")),
    }
}

/// A Secrets Manager request token for pushing `token` to `target` in this context: the same
/// push retried gets the same token (no second version); another push gets another.
fn request_token(ctx: &PushContext, target: &str, token: &Secret) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        ctx.request_id.as_str(),
        target,
        ctx.event.word(),
        &token.fingerprint().to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    crate::secret::hex(&h.finalize())[..48].to_string()
}

/// Opens every target of the token (a target that cannot even be built fails the delivery).
pub async fn open_all(
    t: &crate::config::TokenConfig,
) -> Result<Vec<std::sync::Arc<Configured>>, (String, TargetError)> {
    let mut out = Vec::new();
    for cfg in &t.targets {
        match Configured::open(cfg).await {
            Ok(c) => out.push(std::sync::Arc::new(c)),
            Err(e) => return Err((cfg.name.clone(), e)),
        }
    }
    Ok(out)
}

/// An HTTP client for verify URLs. It follows no redirect and uses no proxy from the
/// environment: a verify URL's query may hold a secret of its own, which goes only where the
/// config says (a 3xx is the last answer, a refusal).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("tokenwarden/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_default()
}
