//! The environments a token is delivered to (`[[token.target]]`) and the `[delivery]` section.
//!
//! Raw fields are all optional so that one mistake does not hide the others; `validate` checks
//! each target against its `kind` and reports every problem with its position.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::diag::{Diagnostic, SourceMap};
use super::{SecretRef, is_loopback, parse_duration};

/// The `kind` words, as a config error lists them.
const KIND_WORDS: &str = "\"dotenv\", \"aws_secret\", \"webhook\", \"exec\", \"ssm_parameter\", \"github_actions_secret\", \"heroku_config_var\", \"vercel_env\", \"render_env_var\", \"kubernetes_secret\"";

/// Default key of a `dotenv` target.
pub const DEFAULT_DOTENV_KEY: &str = "WHATSAPP_ACCESS_TOKEN";
/// Default signature header of a `webhook` target.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Tokenwarden-Signature";
/// Default time one target may take to take a token (and to pass its verify).
pub const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(30);

/// One environment a token is pushed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Unique within the token; names the target in logs, emails and `status`.
    pub name: String,
    /// Rollout order: every target of a wave is verified before the next wave starts
    /// (for example 1 for staging, 2 for production).
    pub wave: u32,
    /// How long a push (and then its verify) may take.
    pub timeout: Duration,
    /// How to tell the environment runs on the new token.
    pub verify: Option<VerifyConfig>,
    /// Where the token goes.
    pub kind: TargetKind,
}

impl TargetConfig {
    /// This target for one member of a group: `{token}` (the token's name) and `{member}`
    /// (the member's part of it) filled in wherever a path, a secret id, a URL or a command
    /// argument can name them. The dotenv variable name is taken as written.
    pub fn for_member(&self, token: &str, member: &str) -> TargetConfig {
        let fill = |s: &str| {
            s.replace("{token}", token)
                .replace("%7Btoken%7D", token)
                .replace("{member}", member)
                .replace("%7Bmember%7D", member)
        };
        let fill_url =
            |u: &reqwest::Url| reqwest::Url::parse(&fill(u.as_str())).unwrap_or_else(|_| u.clone());
        let fill_argv = |argv: &[String]| argv.iter().map(|a| fill(a)).collect::<Vec<_>>();
        let kind = match &self.kind {
            TargetKind::Dotenv { path, key, reload } => TargetKind::Dotenv {
                path: PathBuf::from(fill(&path.to_string_lossy())),
                key: key.clone(),
                reload: reload.as_deref().map(fill_argv),
            },
            TargetKind::AwsSecret {
                secret_id,
                region,
                endpoint,
                json_key,
            } => TargetKind::AwsSecret {
                secret_id: fill(secret_id),
                region: region.clone(),
                endpoint: endpoint.clone(),
                json_key: json_key.as_deref().map(fill),
            },
            TargetKind::Webhook {
                url,
                secret,
                header,
            } => TargetKind::Webhook {
                url: fill_url(url),
                secret: secret.clone(),
                header: header.clone(),
            },
            TargetKind::Exec { command } => TargetKind::Exec {
                command: fill_argv(command),
            },
            TargetKind::SsmParameter {
                parameter,
                region,
                endpoint,
                kms_key_id,
            } => TargetKind::SsmParameter {
                parameter: fill(parameter),
                region: region.clone(),
                endpoint: endpoint.clone(),
                kms_key_id: kms_key_id.clone(),
            },
            TargetKind::GithubActionsSecret { scope, name, api } => {
                TargetKind::GithubActionsSecret {
                    scope: match scope {
                        GithubScope::Repository { owner, repo } => GithubScope::Repository {
                            owner: owner.clone(),
                            repo: fill(repo),
                        },
                        GithubScope::Environment {
                            owner,
                            repo,
                            environment,
                        } => GithubScope::Environment {
                            owner: owner.clone(),
                            repo: fill(repo),
                            environment: fill(environment),
                        },
                        GithubScope::Organization { .. } => scope.clone(),
                    },
                    name: name.clone(),
                    api: api.clone(),
                }
            }
            TargetKind::HerokuConfigVar { app, key, api } => TargetKind::HerokuConfigVar {
                app: fill(app),
                key: key.clone(),
                api: api.clone(),
            },
            TargetKind::VercelEnv {
                project,
                key,
                environments,
                team_id,
                redeploy,
                api,
            } => TargetKind::VercelEnv {
                project: fill(project),
                key: key.clone(),
                environments: environments.clone(),
                team_id: team_id.clone(),
                redeploy: *redeploy,
                api: api.clone(),
            },
            TargetKind::RenderEnvVar {
                service,
                key,
                deploy,
                api,
            } => TargetKind::RenderEnvVar {
                service: fill(service),
                key: key.clone(),
                deploy: *deploy,
                api: api.clone(),
            },
            TargetKind::KubernetesSecret {
                namespace,
                secret_name,
                key,
                kubeconfig,
                context,
                restart,
            } => TargetKind::KubernetesSecret {
                namespace: fill(namespace),
                secret_name: fill(secret_name),
                key: key.clone(),
                kubeconfig: kubeconfig.clone(),
                context: context.clone(),
                restart: restart
                    .iter()
                    .map(|w| Workload {
                        kind: w.kind,
                        name: fill(&w.name),
                    })
                    .collect(),
            },
        };
        TargetConfig {
            name: self.name.clone(),
            wave: self.wave,
            timeout: self.timeout,
            verify: self.verify.as_ref().map(|v| match v {
                VerifyConfig::Url(u) => VerifyConfig::Url(fill_url(u)),
                VerifyConfig::Command(c) => VerifyConfig::Command(fill_argv(c)),
            }),
            kind,
        }
    }
}

/// A target's check that the app runs on the new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyConfig {
    /// An HTTP GET that must answer 2xx.
    Url(reqwest::Url),
    /// A command that must exit 0.
    Command(Vec<String>),
}

/// The kinds of target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// `KEY=value` in an env file.
    Dotenv {
        /// The file.
        path: PathBuf,
        /// The variable.
        key: String,
        /// A command run after the file changed (argv, no shell).
        reload: Option<Vec<String>>,
    },
    /// Another Secrets Manager secret.
    AwsSecret {
        /// Secret name or ARN.
        secret_id: String,
        /// Region; default from the AWS chain.
        region: Option<String>,
        /// Endpoint override.
        endpoint: Option<String>,
        /// When the secret is a JSON object, the key to set.
        json_key: Option<String>,
    },
    /// A signed HTTPS POST.
    Webhook {
        /// The receiver.
        url: reqwest::Url,
        /// The HMAC key the receiver shares.
        secret: SecretRef,
        /// The signature header.
        header: String,
    },
    /// A command that reads the token on standard input.
    Exec {
        /// argv, no shell.
        command: Vec<String>,
    },
    /// An AWS Systems Manager Parameter Store `SecureString`.
    SsmParameter {
        /// The parameter's name (`/billbytekot/prod/WHATSAPP_ACCESS_TOKEN`) or ARN.
        parameter: String,
        /// Region; default from the AWS chain.
        region: Option<String>,
        /// Endpoint override.
        endpoint: Option<String>,
        /// The KMS key that encrypts it; default the account's `alias/aws/ssm`.
        kms_key_id: Option<String>,
    },
    /// A GitHub Actions secret (write-only on GitHub's side).
    GithubActionsSecret {
        /// Whose secret: a repository's, one of its environments', an organisation's.
        scope: GithubScope,
        /// The secret's name (`key`).
        name: String,
        /// Where the API is and the token that may write the secret.
        api: ApiAccess,
    },
    /// One config var of a Heroku app.
    HerokuConfigVar {
        /// The app's name or id.
        app: String,
        /// The var.
        key: String,
        /// Where the API is and the token that may write config vars.
        api: ApiAccess,
    },
    /// One environment variable of a Vercel project.
    VercelEnv {
        /// The project's id or name.
        project: String,
        /// The variable.
        key: String,
        /// Which of `production`, `preview`, `development` it is set for.
        environments: Vec<String>,
        /// The team that owns the project, if any (`teamId`).
        team_id: Option<String>,
        /// Whether to redeploy the latest production deployment after a change.
        redeploy: bool,
        /// Where the API is and the token that may write the project's variables.
        api: ApiAccess,
    },
    /// One environment variable of a Render service, deployed after a change.
    RenderEnvVar {
        /// The service's id (`srv-…`).
        service: String,
        /// The variable.
        key: String,
        /// Whether to deploy after a change and wait until it is live (default true).
        deploy: bool,
        /// Where the API is and the key that may write the service's environment.
        api: ApiAccess,
    },
    /// One key of a Kubernetes Secret, then optionally a rollout restart of workloads.
    KubernetesSecret {
        /// The namespace.
        namespace: String,
        /// The Secret's name.
        secret_name: String,
        /// The key in its data.
        key: String,
        /// A kubeconfig file; none: the pod's service account (in-cluster).
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig's context; none: its current context.
        context: Option<String>,
        /// Workloads restarted after a change, each waited for until its rollout completes.
        restart: Vec<Workload>,
    },
}

/// A workload a `kubernetes_secret` target restarts: `"deployment/NAME"` or
/// `"statefulset/NAME"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// Its name, in the Secret's namespace.
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// The kinds of workload a restart handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
}

impl WorkloadKind {
    /// The API's resource name, as a Role names it.
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
        }
    }
}

/// A platform's API as a target reaches it: `api_url` and `api_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAccess {
    /// The API's base URL (https, or http to loopback).
    pub url: reqwest::Url,
    /// The credential, sent as a bearer token.
    pub token: SecretRef,
}

/// Whose GitHub Actions secret a target writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubScope {
    /// `repository = "owner/repo"`.
    Repository {
        /// The owner (user or organisation).
        owner: String,
        /// The repository.
        repo: String,
    },
    /// `repository = "owner/repo"` and `environment = "production"`.
    Environment {
        /// The owner.
        owner: String,
        /// The repository.
        repo: String,
        /// The deployment environment.
        environment: String,
    },
    /// `organization = "org"`, with `visibility` (`"private"` by default, or `"all"`).
    Organization {
        /// The organisation.
        org: String,
        /// Which repositories may use it.
        visibility: String,
    },
}

impl TargetKind {
    /// The `kind` word.
    pub fn word(&self) -> &'static str {
        match self {
            TargetKind::Dotenv { .. } => "dotenv",
            TargetKind::AwsSecret { .. } => "aws_secret",
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Exec { .. } => "exec",
            TargetKind::SsmParameter { .. } => "ssm_parameter",
            TargetKind::GithubActionsSecret { .. } => "github_actions_secret",
            TargetKind::HerokuConfigVar { .. } => "heroku_config_var",
            TargetKind::VercelEnv { .. } => "vercel_env",
            TargetKind::RenderEnvVar { .. } => "render_env_var",
            TargetKind::KubernetesSecret { .. } => "kubernetes_secret",
        }
    }
}

/// The `[delivery]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Targets of one wave pushed at once, at most.
    pub parallelism: usize,
    /// Where to look for forgotten copies of an old token before revoking it.
    pub scan: ScanConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            parallelism: 4,
            scan: ScanConfig::default(),
        }
    }
}

/// Limits of the search for forgotten copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfig {
    /// Directories searched (none: no search).
    pub roots: Vec<PathBuf>,
    /// Larger files are skipped.
    pub max_file_size: u64,
    /// The search stops after this many files.
    pub max_files: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            roots: Vec::new(),
            max_file_size: 1024 * 1024,
            max_files: 20_000,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    parallelism: Option<Spanned<usize>>,
    scan_roots: Option<Spanned<Vec<String>>>,
    scan_max_file_size: Option<Spanned<u64>>,
    scan_max_files: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    wave: Option<Spanned<u32>>,
    timeout: Option<Spanned<String>>,
    verify_url: Option<Spanned<String>>,
    verify_command: Option<Spanned<Vec<String>>>,
    path: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    reload: Option<Spanned<Vec<String>>>,
    secret_id: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    json_key: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    secret: Option<SecretRef>,
    header: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    parameter: Option<Spanned<String>>,
    kms_key_id: Option<Spanned<String>>,
    repository: Option<Spanned<String>>,
    organization: Option<Spanned<String>>,
    environment: Option<Spanned<String>>,
    visibility: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    api_token: Option<SecretRef>,
    app: Option<Spanned<String>>,
    project: Option<Spanned<String>>,
    environments: Option<Spanned<Vec<String>>>,
    team_id: Option<Spanned<String>>,
    redeploy: Option<Spanned<bool>>,
    service: Option<Spanned<String>>,
    deploy: Option<Spanned<bool>>,
    namespace: Option<Spanned<String>>,
    secret_name: Option<Spanned<String>>,
    kubeconfig: Option<Spanned<String>>,
    context: Option<Spanned<String>>,
    restart: Option<Spanned<Vec<String>>>,
}

/// An https URL, or http to loopback (a local app's health endpoint, a test receiver).
fn url_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: String,
    v: &Spanned<String>,
) -> Option<reqwest::Url> {
    match reqwest::Url::parse(v.get_ref()) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => Some(u),
        _ => {
            diags.push(map.at(
                v.span().start,
                field,
                format!(
                    "expected an https URL (http only to loopback), found {:?}",
                    v.get_ref()
                ),
            ));
            None
        }
    }
}

fn argv_field(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    field: String,
    v: &Spanned<Vec<String>>,
) -> Option<Vec<String>> {
    let argv = v.get_ref();
    if argv.is_empty() || argv[0].trim().is_empty() {
        diags.push(map.at(
            v.span().start,
            field,
            "expected a command as a list of words, such as [\"systemctl\", \"restart\", \"billbytekot-backend\"] (no shell)",
        ));
        return None;
    }
    Some(argv.clone())
}

/// Where one target sits in the file: its diagnostics name `<prefix>.target[<i>].<field>`.
struct TargetAt<'a, 'm> {
    map: &'a SourceMap<'m>,
    prefix: &'a str,
    i: usize,
    /// The target table's offset, for fields that are missing.
    at: usize,
}

impl TargetAt<'_, '_> {
    fn field(&self, name: &str) -> String {
        format!("{}.target[{}].{name}", self.prefix, self.i)
    }

    fn missing(&self, diags: &mut Vec<Diagnostic>, field: &str, what: &str) {
        diags.push(
            self.map
                .at(self.at, self.field(field), format!("missing field: {what}")),
        );
    }
}

/// Validates the targets of one token; `prefix` is like `token[0]`.
pub(super) fn targets(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
    prefix: &str,
    raw: Vec<Spanned<RawTarget>>,
) -> Vec<TargetConfig> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, t) in raw.into_iter().enumerate() {
        let w = TargetAt {
            map,
            prefix,
            i,
            at: t.span().start,
        };
        let t = t.into_inner();
        let errors_before = diags.len();
        let Some(name) = target_name(&w, diags, &mut names, &t) else {
            continue;
        };
        let timeout = target_timeout(&w, diags, &t);
        let verify = target_verify(&w, diags, &t);
        fields_of_other_kinds(&w, diags, &t);
        let kind = match t.kind.as_ref().map(|k| k.get_ref().as_str()) {
            Some("dotenv") => dotenv_kind(&w, diags, warnings, &t, &name, verify.is_some()),
            Some("aws_secret") => aws_secret_kind(&w, diags, &t),
            Some("webhook") => webhook_kind(&w, diags, &t),
            Some("ssm_parameter") => ssm_parameter_kind(&w, diags, &t),
            Some("github_actions_secret") => github_kind(&w, diags, &t),
            Some("heroku_config_var") => heroku_kind(&w, diags, &t),
            Some("vercel_env") => vercel_kind(&w, diags, &t),
            Some("render_env_var") => render_kind(&w, diags, &t),
            Some("kubernetes_secret") => kubernetes_kind(&w, diags, &t),
            Some("exec") => match &t.command {
                Some(c) => argv_field(map, diags, w.field("command"), c)
                    .map(|command| TargetKind::Exec { command }),
                None => {
                    w.missing(
                        diags,
                        "command",
                        "the command that reads the token on standard input, as a list of words",
                    );
                    None
                }
            },
            Some(other) => {
                let pos = t.kind.as_ref().map(|k| k.span().start).unwrap_or(w.at);
                diags.push(map.at(
                    pos,
                    w.field("kind"),
                    format!("expected one of {KIND_WORDS}, found {other:?}"),
                ));
                None
            }
            None => {
                w.missing(diags, "kind", &format!("one of {KIND_WORDS}"));
                None
            }
        };
        if let Some(kind) = kind
            && diags.len() == errors_before
        {
            out.push(TargetConfig {
                name,
                wave: t.wave.as_ref().map(|w| *w.get_ref()).unwrap_or(0),
                timeout,
                verify,
                kind,
            });
        }
    }
    out
}

/// A target's `name`, valid and unique among the token's targets; `None` when it is missing
/// or malformed (reported), which skips the target.
fn target_name(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    names: &mut std::collections::HashSet<String>,
    t: &RawTarget,
) -> Option<String> {
    match &t.name {
        Some(n) if super::valid_name(n.get_ref()) => {
            if !names.insert(n.get_ref().clone()) {
                diags.push(w.map.at(
                    n.span().start,
                    w.field("name"),
                    format!("duplicate target name {:?}", n.get_ref()),
                ));
            }
            Some(n.get_ref().clone())
        }
        Some(n) => {
            diags.push(w.map.at(
                n.span().start,
                w.field("name"),
                format!(
                    "expected 1-64 letters, digits, `-`, `_` or `.`, found {:?}",
                    n.get_ref()
                ),
            ));
            None
        }
        None => {
            diags.push(w.map.at(
                w.at,
                w.field("name"),
                "missing field: every target needs a `name`, such as \"staging-backend\"",
            ));
            None
        }
    }
}

/// A target's `timeout`, positive, [`DEFAULT_TARGET_TIMEOUT`] when absent.
fn target_timeout(w: &TargetAt<'_, '_>, diags: &mut Vec<Diagnostic>, t: &RawTarget) -> Duration {
    match &t.timeout {
        None => DEFAULT_TARGET_TIMEOUT,
        Some(v) => match parse_duration(v.get_ref()) {
            Some(d) if !d.is_zero() => d,
            _ => {
                diags.push(w.map.at(
                    v.span().start,
                    w.field("timeout"),
                    format!(
                        "expected a positive duration such as \"30s\", found {:?}",
                        v.get_ref()
                    ),
                ));
                DEFAULT_TARGET_TIMEOUT
            }
        },
    }
}

/// A target's `verify_url` or `verify_command` (not both).
fn target_verify(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<VerifyConfig> {
    match (&t.verify_url, &t.verify_command) {
        (Some(_), Some(c)) => {
            diags.push(w.map.at(
                c.span().start,
                w.field("verify_command"),
                "set `verify_url` or `verify_command`, not both",
            ));
            None
        }
        (Some(u), None) => url_field(w.map, diags, w.field("verify_url"), u).map(VerifyConfig::Url),
        (None, Some(c)) => {
            argv_field(w.map, diags, w.field("verify_command"), c).map(VerifyConfig::Command)
        }
        (None, None) => None,
    }
}

/// Reports fields that belong to another kind than the target's: mistakes worth naming.
fn fields_of_other_kinds(w: &TargetAt<'_, '_>, diags: &mut Vec<Diagnostic>, t: &RawTarget) {
    let allowed: &[&str] = match t.kind.as_ref().map(|k| k.get_ref().as_str()) {
        Some("dotenv") => &["path", "key", "reload"],
        Some("aws_secret") => &["secret_id", "region", "endpoint", "json_key"],
        Some("webhook") => &["url", "secret", "header"],
        Some("exec") => &["command"],
        Some("ssm_parameter") => &["parameter", "region", "endpoint", "kms_key_id"],
        Some("github_actions_secret") => &[
            "repository",
            "organization",
            "environment",
            "visibility",
            "key",
            "api_url",
            "api_token",
        ],
        Some("heroku_config_var") => &["app", "key", "api_url", "api_token"],
        Some("vercel_env") => &[
            "project",
            "key",
            "environments",
            "team_id",
            "redeploy",
            "api_url",
            "api_token",
        ],
        Some("render_env_var") => &["service", "key", "deploy", "api_url", "api_token"],
        Some("kubernetes_secret") => &[
            "namespace",
            "secret_name",
            "key",
            "kubeconfig",
            "context",
            "restart",
        ],
        _ => &[],
    };
    let present = [
        ("path", t.path.as_ref().map(|v| v.span().start)),
        ("key", t.key.as_ref().map(|v| v.span().start)),
        ("reload", t.reload.as_ref().map(|v| v.span().start)),
        ("secret_id", t.secret_id.as_ref().map(|v| v.span().start)),
        ("region", t.region.as_ref().map(|v| v.span().start)),
        ("endpoint", t.endpoint.as_ref().map(|v| v.span().start)),
        ("json_key", t.json_key.as_ref().map(|v| v.span().start)),
        ("url", t.url.as_ref().map(|v| v.span().start)),
        ("secret", t.secret.as_ref().map(|_| w.at)),
        ("header", t.header.as_ref().map(|v| v.span().start)),
        ("command", t.command.as_ref().map(|v| v.span().start)),
        ("parameter", t.parameter.as_ref().map(|v| v.span().start)),
        ("kms_key_id", t.kms_key_id.as_ref().map(|v| v.span().start)),
        ("repository", t.repository.as_ref().map(|v| v.span().start)),
        (
            "organization",
            t.organization.as_ref().map(|v| v.span().start),
        ),
        (
            "environment",
            t.environment.as_ref().map(|v| v.span().start),
        ),
        ("visibility", t.visibility.as_ref().map(|v| v.span().start)),
        ("api_url", t.api_url.as_ref().map(|v| v.span().start)),
        ("api_token", t.api_token.as_ref().map(|_| w.at)),
        ("app", t.app.as_ref().map(|v| v.span().start)),
        ("project", t.project.as_ref().map(|v| v.span().start)),
        (
            "environments",
            t.environments.as_ref().map(|v| v.span().start),
        ),
        ("team_id", t.team_id.as_ref().map(|v| v.span().start)),
        ("redeploy", t.redeploy.as_ref().map(|v| v.span().start)),
        ("service", t.service.as_ref().map(|v| v.span().start)),
        ("deploy", t.deploy.as_ref().map(|v| v.span().start)),
        ("namespace", t.namespace.as_ref().map(|v| v.span().start)),
        (
            "secret_name",
            t.secret_name.as_ref().map(|v| v.span().start),
        ),
        ("kubeconfig", t.kubeconfig.as_ref().map(|v| v.span().start)),
        ("context", t.context.as_ref().map(|v| v.span().start)),
        ("restart", t.restart.as_ref().map(|v| v.span().start)),
    ];
    if let Some(k) = &t.kind
        && !allowed.is_empty()
    {
        let k = k.get_ref();
        for (field, pos) in present {
            if let Some(pos) = pos
                && !allowed.contains(&field)
            {
                diags.push(w.map.at(
                    pos,
                    w.field(field),
                    format!("`{field}` does not apply to kind = \"{k}\""),
                ));
            }
        }
    }
}

/// `kind = "dotenv"`: an absolute `path`, a variable name, an optional `reload`; a target with
/// neither `reload` nor a verify is a warning (the app would keep the old token).
fn dotenv_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
    t: &RawTarget,
    name: &str,
    has_verify: bool,
) -> Option<TargetKind> {
    let path = match &t.path {
        Some(p) if p.get_ref().starts_with('/') => Some(PathBuf::from(p.get_ref())),
        Some(p) => {
            diags.push(w.map.at(p.span().start, w.field("path"), format!("expected an absolute path, such as \"/srv/billbytekot/backend/.env\", found {:?}", p.get_ref())));
            None
        }
        None => {
            w.missing(
                diags,
                "path",
                "the env file, such as \"/srv/billbytekot/backend/.env\"",
            );
            None
        }
    };
    let key = match &t.key {
        None => DEFAULT_DOTENV_KEY.to_string(),
        Some(k) if valid_env_key(k.get_ref()) => k.get_ref().clone(),
        Some(k) => {
            diags.push(w.map.at(
                k.span().start,
                w.field("key"),
                format!(
                    "expected a variable name of letters, digits and `_`, found {:?}",
                    k.get_ref()
                ),
            ));
            DEFAULT_DOTENV_KEY.to_string()
        }
    };
    let reload = t
        .reload
        .as_ref()
        .and_then(|r| argv_field(w.map, diags, w.field("reload"), r));
    if reload.is_none() && !has_verify && t.reload.is_none() {
        warnings.push(w.map.at(w.at, format!("{}.target[{}]", w.prefix, w.i), format!(
            "dotenv target {name:?} has neither `reload` nor a verify: the file will change, but the running app keeps the old token until it is restarted; add reload = [\"systemctl\", \"restart\", \"<service>\"] or verify_url"
        )).to_string());
    }
    path.map(|path| TargetKind::Dotenv { path, key, reload })
}

/// `kind = "aws_secret"`: a `secret_id`, an optional endpoint URL, region and JSON key.
fn aws_secret_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let secret_id = t
        .secret_id
        .as_ref()
        .map(|s| s.get_ref().clone())
        .filter(|s| !s.is_empty());
    if secret_id.is_none() {
        w.missing(diags, "secret_id", "the secret's name or ARN");
    }
    if let Some(e) = &t.endpoint {
        url_field(w.map, diags, w.field("endpoint"), e);
    }
    secret_id.map(|secret_id| TargetKind::AwsSecret {
        secret_id,
        region: t.region.as_ref().map(|r| r.get_ref().clone()),
        endpoint: t.endpoint.as_ref().map(|r| r.get_ref().clone()),
        json_key: t.json_key.as_ref().map(|r| r.get_ref().clone()),
    })
}

/// `kind = "ssm_parameter"`: a `parameter` name, an optional region, endpoint URL and KMS key.
fn ssm_parameter_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let parameter = t
        .parameter
        .as_ref()
        .map(|s| s.get_ref().clone())
        .filter(|s| !s.is_empty());
    if parameter.is_none() {
        w.missing(
            diags,
            "parameter",
            "the parameter's name, such as \"/billbytekot/prod/WHATSAPP_ACCESS_TOKEN\"",
        );
    }
    if let Some(e) = &t.endpoint {
        url_field(w.map, diags, w.field("endpoint"), e);
    }
    parameter.map(|parameter| TargetKind::SsmParameter {
        parameter,
        region: t.region.as_ref().map(|r| r.get_ref().clone()),
        endpoint: t.endpoint.as_ref().map(|r| r.get_ref().clone()),
        kms_key_id: t.kms_key_id.as_ref().map(|r| r.get_ref().clone()),
    })
}

/// A platform target's `api_url` (`default` when absent) and `api_token` (required).
fn api_access(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
    default: &str,
    token_hint: &str,
) -> Option<ApiAccess> {
    let url = match &t.api_url {
        Some(u) => url_field(w.map, diags, w.field("api_url"), u),
        None => reqwest::Url::parse(default).ok(),
    };
    if t.api_token.is_none() {
        w.missing(
            diags,
            "api_token",
            &format!(
                "{token_hint}, as {{ env = \"NAME\" }}, {{ file = \"/path\" }} or {{ credential = \"NAME\" }}"
            ),
        );
    }
    Some(ApiAccess {
        url: url?,
        token: t.api_token.clone()?,
    })
}

/// A platform variable's `key`: a variable name, [`DEFAULT_DOTENV_KEY`] when absent.
fn platform_key(w: &TargetAt<'_, '_>, diags: &mut Vec<Diagnostic>, t: &RawTarget) -> String {
    match &t.key {
        None => DEFAULT_DOTENV_KEY.to_string(),
        Some(k) if valid_env_key(k.get_ref()) => k.get_ref().clone(),
        Some(k) => {
            diags.push(w.map.at(
                k.span().start,
                w.field("key"),
                format!(
                    "expected a variable name of letters, digits and `_`, found {:?}",
                    k.get_ref()
                ),
            ));
            DEFAULT_DOTENV_KEY.to_string()
        }
    }
}

/// `kind = "github_actions_secret"`: `repository` (with an optional `environment`) or
/// `organization` (with an optional `visibility`), the secret's `key`, the API.
fn github_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let name = platform_key(w, diags, t);
    if name.to_ascii_uppercase().starts_with("GITHUB_") {
        diags.push(w.map.at(
            t.key.as_ref().map(|k| k.span().start).unwrap_or(w.at),
            w.field("key"),
            format!("GitHub refuses secret names that start with GITHUB_, found {name:?}"),
        ));
    }
    let scope = match (&t.repository, &t.organization) {
        (Some(r), None) => {
            let parts: Vec<&str> = r.get_ref().split('/').collect();
            let ok = |p: &str| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.{}".contains(&b))
            };
            if parts.len() != 2 || !parts.iter().all(|p| ok(p)) {
                diags.push(w.map.at(
                    r.span().start,
                    w.field("repository"),
                    format!(
                        "expected \"owner/repo\", such as \"billbytekot/backend\", found {:?}",
                        r.get_ref()
                    ),
                ));
                None
            } else {
                let (owner, repo) = (parts[0].to_string(), parts[1].to_string());
                Some(match &t.environment {
                    Some(e) if !e.get_ref().is_empty() => GithubScope::Environment {
                        owner,
                        repo,
                        environment: e.get_ref().clone(),
                    },
                    Some(e) => {
                        diags.push(w.map.at(
                            e.span().start,
                            w.field("environment"),
                            "expected an environment name, such as \"production\"",
                        ));
                        return None;
                    }
                    None => GithubScope::Repository { owner, repo },
                })
            }
        }
        (None, Some(o)) => {
            if let Some(e) = &t.environment {
                diags.push(w.map.at(
                    e.span().start,
                    w.field("environment"),
                    "an environment belongs to a repository: set `repository`, not `organization`",
                ));
            }
            let visibility = t
                .visibility
                .as_ref()
                .map(|v| v.get_ref().as_str())
                .unwrap_or("private");
            if !["private", "all"].contains(&visibility) {
                diags.push(
                    w.map.at(
                        t.visibility
                            .as_ref()
                            .map(|v| v.span().start)
                            .unwrap_or(w.at),
                        w.field("visibility"),
                        format!("expected \"private\" or \"all\", found {visibility:?}"),
                    ),
                );
            }
            Some(GithubScope::Organization {
                org: o.get_ref().clone(),
                visibility: visibility.to_string(),
            })
        }
        (Some(_), Some(o)) => {
            diags.push(w.map.at(
                o.span().start,
                w.field("organization"),
                "set `repository` or `organization`, not both",
            ));
            None
        }
        (None, None) => {
            w.missing(
                diags,
                "repository",
                "\"owner/repo\" (or `organization` for an organisation secret)",
            );
            None
        }
    };
    if t.visibility.is_some() && t.organization.is_none() {
        diags.push(
            w.map.at(
                t.visibility
                    .as_ref()
                    .map(|v| v.span().start)
                    .unwrap_or(w.at),
                w.field("visibility"),
                "`visibility` applies to an organisation secret only",
            ),
        );
    }
    let api = api_access(
        w,
        diags,
        t,
        "https://api.github.com",
        "a fine-grained token or GitHub App installation token that may write the secret",
    );
    Some(TargetKind::GithubActionsSecret {
        scope: scope?,
        name,
        api: api?,
    })
}

/// A required name field (an app, a project, a service): not empty.
fn required_name(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    field: &str,
    v: Option<&Spanned<String>>,
    what: &str,
) -> Option<String> {
    match v {
        Some(v) if !v.get_ref().trim().is_empty() => Some(v.get_ref().clone()),
        Some(v) => {
            diags.push(w.map.at(
                v.span().start,
                w.field(field),
                format!("expected {what}, found an empty string"),
            ));
            None
        }
        None => {
            w.missing(diags, field, what);
            None
        }
    }
}

/// `kind = "heroku_config_var"`: an `app`, the var's `key`, the API.
fn heroku_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let app = required_name(
        w,
        diags,
        "app",
        t.app.as_ref(),
        "the app's name or id, such as \"billbytekot-backend\"",
    );
    let key = platform_key(w, diags, t);
    let api = api_access(
        w,
        diags,
        t,
        "https://api.heroku.com",
        "a Heroku API token with the write-protected scope",
    );
    Some(TargetKind::HerokuConfigVar {
        app: app?,
        key,
        api: api?,
    })
}

/// `kind = "vercel_env"`: a `project`, the variable's `key`, its `environments` (default
/// `["production"]`), an optional `team_id` and `redeploy`, the API.
fn vercel_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let project = required_name(
        w,
        diags,
        "project",
        t.project.as_ref(),
        "the project's id or name, such as \"billbytekot-web\"",
    );
    let key = platform_key(w, diags, t);
    let environments = match &t.environments {
        None => vec!["production".to_string()],
        Some(e) => {
            let list = e.get_ref();
            let known = ["production", "preview", "development"];
            if list.is_empty() || list.iter().any(|x| !known.contains(&x.as_str())) {
                diags.push(w.map.at(
                    e.span().start,
                    w.field("environments"),
                    format!(
                        "expected some of \"production\", \"preview\", \"development\", found {list:?}"
                    ),
                ));
            }
            list.clone()
        }
    };
    let api = api_access(
        w,
        diags,
        t,
        "https://api.vercel.com",
        "a Vercel access token scoped to the project's team",
    );
    Some(TargetKind::VercelEnv {
        project: project?,
        key,
        environments,
        team_id: t.team_id.as_ref().map(|v| v.get_ref().clone()),
        redeploy: t.redeploy.as_ref().is_some_and(|v| *v.get_ref()),
        api: api?,
    })
}

/// `kind = "render_env_var"`: a `service` id, the variable's `key`, `deploy` (default true),
/// the API.
fn render_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let service = required_name(
        w,
        diags,
        "service",
        t.service.as_ref(),
        "the service's id, such as \"srv-cq1abc2def3ghi4jkl5m\"",
    );
    let key = platform_key(w, diags, t);
    let api = api_access(w, diags, t, "https://api.render.com/v1", "a Render API key");
    Some(TargetKind::RenderEnvVar {
        service: service?,
        key,
        deploy: t.deploy.as_ref().is_none_or(|v| *v.get_ref()),
        api: api?,
    })
}

/// `kind = "kubernetes_secret"`: a `namespace`, a `secret_name`, the data `key`, an optional
/// absolute `kubeconfig` (and `context`), workloads to `restart`.
fn kubernetes_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let namespace = required_name(
        w,
        diags,
        "namespace",
        t.namespace.as_ref(),
        "the Secret's namespace, such as \"billbytekot\"",
    );
    let secret_name = required_name(
        w,
        diags,
        "secret_name",
        t.secret_name.as_ref(),
        "the Secret's name, such as \"whatsapp\"",
    );
    // A Secret's data key may hold `-` and `.` as well as a variable name's characters.
    let key = match &t.key {
        None => DEFAULT_DOTENV_KEY.to_string(),
        Some(k)
            if !k.get_ref().is_empty()
                && k.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            k.get_ref().clone()
        }
        Some(k) => {
            diags.push(w.map.at(
                k.span().start,
                w.field("key"),
                format!(
                    "expected a Secret data key of letters, digits, `-`, `_` and `.`, found {:?}",
                    k.get_ref()
                ),
            ));
            DEFAULT_DOTENV_KEY.to_string()
        }
    };
    let kubeconfig = match &t.kubeconfig {
        Some(p) if p.get_ref().starts_with('/') => Some(PathBuf::from(p.get_ref())),
        Some(p) => {
            diags.push(w.map.at(
                p.span().start,
                w.field("kubeconfig"),
                format!(
                    "expected an absolute path, such as \"/etc/tokenwarden/kubeconfig\", found {:?}",
                    p.get_ref()
                ),
            ));
            None
        }
        None => None,
    };
    if let (Some(c), None) = (&t.context, &t.kubeconfig) {
        diags.push(w.map.at(
            c.span().start,
            w.field("context"),
            "`context` names a context of the `kubeconfig`: set `kubeconfig` too",
        ));
    }
    let mut restart = Vec::new();
    if let Some(r) = &t.restart {
        for item in r.get_ref() {
            let parsed = match item.split_once('/') {
                Some(("deployment" | "deployments" | "deploy", n)) if !n.is_empty() => {
                    Some((WorkloadKind::Deployment, n))
                }
                Some(("statefulset" | "statefulsets" | "sts", n)) if !n.is_empty() => {
                    Some((WorkloadKind::StatefulSet, n))
                }
                _ => None,
            };
            match parsed {
                Some((kind, name)) => restart.push(Workload {
                    kind,
                    name: name.to_string(),
                }),
                None => diags.push(w.map.at(
                    r.span().start,
                    w.field("restart"),
                    format!("expected \"deployment/NAME\" or \"statefulset/NAME\", found {item:?}"),
                )),
            }
        }
    }
    Some(TargetKind::KubernetesSecret {
        namespace: namespace?,
        secret_name: secret_name?,
        key,
        kubeconfig,
        context: t.context.as_ref().map(|c| c.get_ref().clone()),
        restart,
    })
}

/// `kind = "webhook"`: a `url`, the signing `secret`, an optional header name.
fn webhook_kind(
    w: &TargetAt<'_, '_>,
    diags: &mut Vec<Diagnostic>,
    t: &RawTarget,
) -> Option<TargetKind> {
    let url = match &t.url {
        Some(u) => url_field(w.map, diags, w.field("url"), u),
        None => {
            w.missing(diags, "url", "the receiver's https URL");
            None
        }
    };
    if t.secret.is_none() {
        w.missing(
            diags,
            "secret",
            "the signing key shared with the receiver, as { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }",
        );
    }
    // Checked here as the client will at run time: a CR or LF (or any byte that is not a
    // header-name character) would otherwise be refused only when the first rotation
    // delivers, after the token was obtained.
    if let Some(h) = &t.header
        && reqwest::header::HeaderName::from_bytes(h.get_ref().as_bytes()).is_err()
    {
        diags.push(w.map.at(
            h.span().start,
            w.field("header"),
            format!(
                "expected an HTTP header name (letters, digits and `-`, no spaces, CR or LF), such as \"X-Tokenwarden-Signature\", found {:?}",
                h.get_ref()
            ),
        ));
    }
    match (url, t.secret.clone()) {
        (Some(url), Some(secret)) => Some(TargetKind::Webhook {
            url,
            secret,
            header: t
                .header
                .as_ref()
                .map(|h| h.get_ref().clone())
                .unwrap_or_else(|| DEFAULT_SIGNATURE_HEADER.into()),
        }),
        _ => None,
    }
}

fn valid_env_key(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Validates `[delivery]`.
pub(super) fn delivery(
    map: &SourceMap<'_>,
    diags: &mut Vec<Diagnostic>,
    raw: Option<RawDelivery>,
) -> DeliveryConfig {
    let raw = raw.unwrap_or_default();
    let mut d = DeliveryConfig::default();
    if let Some(p) = &raw.parallelism {
        match *p.get_ref() {
            0 => diags.push(map.at(p.span().start, "delivery.parallelism", "must be at least 1")),
            n => d.parallelism = n,
        }
    }
    if let Some(roots) = &raw.scan_roots {
        for r in roots.get_ref() {
            if r.starts_with('/') {
                d.scan.roots.push(PathBuf::from(r));
            } else {
                diags.push(map.at(roots.span().start, "delivery.scan_roots", format!("expected absolute directories such as [\"/srv\", \"/etc/billbytekot\"], found {r:?}")));
            }
        }
    }
    if let Some(s) = &raw.scan_max_file_size {
        d.scan.max_file_size = *s.get_ref();
    }
    if let Some(n) = &raw.scan_max_files {
        d.scan.max_files = *n.get_ref();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[meta]\napp_id = \"634974688087057\"\napp_secret = { env = \"S\" }\n";

    fn parse(text: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::parse(std::path::Path::new("t.toml"), &format!("{HEAD}{text}"))
            .map_err(|d| d.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn every_kind_parses_with_defaults() {
        let cfg = parse(
            r#"
[delivery]
parallelism = 2
scan_roots = ["/srv", "/etc/billbytekot"]

[[token]]
name = "prod"
[[token.target]]
name = "staging-env"
kind = "dotenv"
path = "/srv/staging/backend/.env"
reload = ["systemctl", "restart", "billbytekot-staging"]
wave = 1
[[token.target]]
name = "prod-secret"
kind = "aws_secret"
secret_id = "billbytekot/prod/backend"
json_key = "WHATSAPP_ACCESS_TOKEN"
wave = 2
verify_url = "https://billbytekot.example.com/health/whatsapp"
[[token.target]]
name = "pos"
kind = "webhook"
url = "https://pos.example.com/hooks/token"
secret = { env = "POS_HOOK_SECRET" }
[[token.target]]
name = "worker"
kind = "exec"
command = ["/usr/local/bin/set-worker-token"]
timeout = "10s"
verify_command = ["/usr/local/bin/worker-health"]
"#,
        )
        .unwrap();
        assert_eq!(cfg.delivery.parallelism, 2);
        assert_eq!(cfg.delivery.scan.roots.len(), 2);
        let t = &cfg.tokens[0].targets;
        assert_eq!(t.len(), 4);
        assert_eq!(
            t[0].kind,
            TargetKind::Dotenv {
                path: "/srv/staging/backend/.env".into(),
                key: DEFAULT_DOTENV_KEY.into(),
                reload: Some(vec![
                    "systemctl".into(),
                    "restart".into(),
                    "billbytekot-staging".into()
                ]),
            }
        );
        assert_eq!((t[0].wave, t[1].wave, t[2].wave), (1, 2, 0));
        assert_eq!(t[2].timeout, DEFAULT_TARGET_TIMEOUT);
        assert_eq!(t[3].timeout, Duration::from_secs(10));
        assert!(
            matches!(&t[2].kind, TargetKind::Webhook { header, .. } if header == DEFAULT_SIGNATURE_HEADER)
        );
        assert!(matches!(t[1].verify, Some(VerifyConfig::Url(_))));
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn mistakes_are_named_with_their_field() {
        let errs = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "a"
kind = "dotenv"
path = "backend/.env"
[[token.target]]
name = "b"
kind = "webhook"
url = "http://pos.example.com/hook"
[[token.target]]
name = "c"
kind = "ftp"
[[token.target]]
name = "d"
kind = "exec"
command = []
secret_id = "x"
[[token.target]]
kind = "exec"
command = ["x"]
[[token.target]]
name = "a"
kind = "exec"
command = ["x"]
"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "`token[0].target[0].path`: expected an absolute path",
            "`token[0].target[1].url`: expected an https URL",
            "`token[0].target[1].secret`: missing field",
            "`token[0].target[2].kind`: expected one of \"dotenv\", \"aws_secret\", \"webhook\", \"exec\"",
            "`token[0].target[3].command`: expected a command as a list of words",
            "`token[0].target[3].secret_id`: `secret_id` does not apply to kind = \"exec\"",
            "`token[0].target[4].name`: missing field",
            "`token[0].target[5].name`: duplicate target name \"a\"",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn an_ssm_parameter_target_parses_and_its_mistakes_are_named() {
        let cfg = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "ssm"
kind = "ssm_parameter"
parameter = "/billbytekot/prod/WHATSAPP_ACCESS_TOKEN"
kms_key_id = "alias/billbytekot"
region = "eu-west-1"
"#,
        )
        .unwrap();
        assert_eq!(
            cfg.tokens[0].targets[0].kind,
            TargetKind::SsmParameter {
                parameter: "/billbytekot/prod/WHATSAPP_ACCESS_TOKEN".into(),
                region: Some("eu-west-1".into()),
                endpoint: None,
                kms_key_id: Some("alias/billbytekot".into()),
            }
        );
        let errs = parse(
            "[[token]]\nname = \"prod\"\n[[token.target]]\nname = \"ssm\"\nkind = \"ssm_parameter\"\nendpoint = \"http://ssm.example.com\"\npath = \"/x\"\n",
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "`token[0].target[0].parameter`: missing field",
            "`token[0].target[0].endpoint`: expected an https URL",
            "`token[0].target[0].path`: `path` does not apply to kind = \"ssm_parameter\"",
        ] {
            assert!(errs.contains(want), "missing {want:?} in\n{errs}");
        }
    }

    #[test]
    fn github_actions_secret_targets_parse_and_their_mistakes_are_named() {
        let cfg = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "gh-env"
kind = "github_actions_secret"
repository = "billbytekot/backend"
environment = "production"
api_token = { env = "GH_TOKEN" }
[[token.target]]
name = "gh-org"
kind = "github_actions_secret"
organization = "billbytekot"
visibility = "all"
key = "WA_TOKEN"
api_url = "https://github.example.com/api/v3"
api_token = { file = "/etc/tokenwarden/gh" }
"#,
        )
        .unwrap();
        let t = &cfg.tokens[0].targets;
        match &t[0].kind {
            TargetKind::GithubActionsSecret { scope, name, api } => {
                assert_eq!(
                    scope,
                    &GithubScope::Environment {
                        owner: "billbytekot".into(),
                        repo: "backend".into(),
                        environment: "production".into()
                    }
                );
                assert_eq!(name, DEFAULT_DOTENV_KEY);
                assert_eq!(api.url.as_str(), "https://api.github.com/");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&t[1].kind,
            TargetKind::GithubActionsSecret { scope: GithubScope::Organization { visibility, .. }, name, api }
                if visibility == "all" && name == "WA_TOKEN" && api.url.host_str() == Some("github.example.com")));
        let errs = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "a"
kind = "github_actions_secret"
repository = "billbytekot"
key = "GITHUB_TOKEN"
[[token.target]]
name = "b"
kind = "github_actions_secret"
organization = "billbytekot"
visibility = "selected"
api_url = "http://api.github.com"
api_token = { env = "GH" }
"#,
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "`token[0].target[0].repository`: expected \"owner/repo\"",
            "`token[0].target[0].key`: GitHub refuses secret names that start with GITHUB_",
            "`token[0].target[0].api_token`: missing field",
            "`token[0].target[1].visibility`: expected \"private\" or \"all\"",
            "`token[0].target[1].api_url`: expected an https URL",
        ] {
            assert!(errs.contains(want), "missing {want:?} in\n{errs}");
        }
    }

    #[test]
    fn platform_variable_targets_parse_and_their_mistakes_are_named() {
        let cfg = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "heroku"
kind = "heroku_config_var"
app = "billbytekot-backend"
api_token = { env = "HEROKU_API_KEY" }
[[token.target]]
name = "vercel"
kind = "vercel_env"
project = "billbytekot-web"
environments = ["production", "preview"]
team_id = "team_bbk"
redeploy = true
api_token = { env = "VERCEL_TOKEN" }
[[token.target]]
name = "render"
kind = "render_env_var"
service = "srv-cq1abc"
key = "WA_TOKEN"
api_token = { env = "RENDER_API_KEY" }
"#,
        )
        .unwrap();
        let t = &cfg.tokens[0].targets;
        assert_eq!(
            t[0].kind,
            TargetKind::HerokuConfigVar {
                app: "billbytekot-backend".into(),
                key: DEFAULT_DOTENV_KEY.into(),
                api: ApiAccess {
                    url: "https://api.heroku.com".parse().unwrap(),
                    token: SecretRef::Env("HEROKU_API_KEY".into()),
                },
            }
        );
        assert!(matches!(&t[1].kind,
            TargetKind::VercelEnv { project, environments, team_id, redeploy: true, api, .. }
                if project == "billbytekot-web" && environments.len() == 2
                    && team_id.as_deref() == Some("team_bbk")
                    && api.url.as_str() == "https://api.vercel.com/"));
        assert!(matches!(&t[2].kind,
            TargetKind::RenderEnvVar { service, key, deploy: true, api }
                if service == "srv-cq1abc" && key == "WA_TOKEN"
                    && api.url.as_str() == "https://api.render.com/v1"));
        let errs = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "heroku"
kind = "heroku_config_var"
key = "WHATSAPP TOKEN"
api_token = { env = "HEROKU_API_KEY" }
repository = "a/b"
[[token.target]]
name = "vercel"
kind = "vercel_env"
project = "web"
environments = ["staging"]
api_token = { env = "VERCEL_TOKEN" }
[[token.target]]
name = "render"
kind = "render_env_var"
api_token = { env = "RENDER_API_KEY" }
"#,
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "`token[0].target[0].app`: missing field",
            "`token[0].target[0].key`: expected a variable name",
            "`token[0].target[0].repository`: `repository` does not apply to kind = \"heroku_config_var\"",
            "`token[0].target[1].environments`: expected some of \"production\", \"preview\", \"development\"",
            "`token[0].target[2].service`: missing field",
        ] {
            assert!(errs.contains(want), "missing {want:?} in\n{errs}");
        }
    }

    #[test]
    fn a_kubernetes_secret_target_parses_and_its_mistakes_are_named() {
        let cfg = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "k8s"
kind = "kubernetes_secret"
namespace = "billbytekot"
secret_name = "whatsapp"
key = "whatsapp.token"
kubeconfig = "/etc/tokenwarden/kubeconfig"
context = "prod"
restart = ["deployment/backend", "sts/worker"]
"#,
        )
        .unwrap();
        assert_eq!(
            cfg.tokens[0].targets[0].kind,
            TargetKind::KubernetesSecret {
                namespace: "billbytekot".into(),
                secret_name: "whatsapp".into(),
                key: "whatsapp.token".into(),
                kubeconfig: Some("/etc/tokenwarden/kubeconfig".into()),
                context: Some("prod".into()),
                restart: vec![
                    Workload {
                        kind: WorkloadKind::Deployment,
                        name: "backend".into()
                    },
                    Workload {
                        kind: WorkloadKind::StatefulSet,
                        name: "worker".into()
                    },
                ],
            }
        );
        let errs = parse(
            r#"
[[token]]
name = "prod"
[[token.target]]
name = "k8s"
kind = "kubernetes_secret"
namespace = "billbytekot"
kubeconfig = "kubeconfig"
restart = ["pod/backend"]
"#,
        )
        .unwrap_err()
        .join("\n");
        for want in [
            "`token[0].target[0].secret_name`: missing field",
            "`token[0].target[0].kubeconfig`: expected an absolute path",
            "`token[0].target[0].restart`: expected \"deployment/NAME\" or \"statefulset/NAME\", found \"pod/backend\"",
        ] {
            assert!(errs.contains(want), "missing {want:?} in\n{errs}");
        }
    }

    #[test]
    fn a_dotenv_target_that_nothing_reloads_is_a_warning() {
        let cfg = parse(
            "[[token]]\nname = \"prod\"\n[[token.target]]\nname = \"env\"\nkind = \"dotenv\"\npath = \"/srv/app/.env\"\n",
        )
        .unwrap();
        assert_eq!(cfg.warnings.len(), 1);
        assert!(
            cfg.warnings[0].contains("keeps the old token until it is restarted"),
            "{:?}",
            cfg.warnings
        );
        assert!(
            cfg.warnings[0].starts_with("t.toml:"),
            "located: {:?}",
            cfg.warnings
        );
    }
}
