//! The AWS Secrets Manager store: the token is the `AWSCURRENT` version of a secret, either the
//! whole secret string or one key of a JSON secret (so an existing app secret with other keys
//! keeps them).
//!
//! Credentials come from the AWS default chain (environment, profile, instance role); an
//! endpoint override serves VPC endpoints and tests (moto's server). The stage is always named
//! explicitly: some emulators answer an unstaged read with another version.
//!
//! Writes use Secrets Manager's own primitives so that they are safe against a second writer:
//! `PutSecretValue` with a `ClientRequestToken` (idempotent staging) and
//! `UpdateSecretVersionStage` with `RemoveFromVersionId` (a compare-and-swap on a label). For a
//! JSON secret the staged value is the current JSON with only the token's key replaced.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use aws_sdk_secretsmanager::types::SecretVersionsListEntry;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretStore, StoreError, VersionId};
use crate::secret::Secret;

/// One secret in Secrets Manager.
#[derive(Debug, Clone)]
pub struct AwsStore {
    client: Client,
    secret_id: String,
    json_key: Option<String>,
}

impl AwsStore {
    /// A store for `secret_id`, with the default credential chain, an optional region and
    /// endpoint override.
    pub async fn connect(
        secret_id: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
        json_key: Option<String>,
    ) -> Self {
        let conf = sdk_config(region, endpoint).await;
        Self::from_sdk_config(&conf, secret_id, json_key)
    }

    /// The secrets under `name_prefix` and/or carrying the tag `tag_key` (= `tag_value`), every
    /// page of `ListSecrets`; secrets scheduled for deletion are left out.
    ///
    /// # Errors
    /// As reading a secret: [`StoreError::Unavailable`] (retry) or [`StoreError::Broken`].
    pub async fn list(
        region: Option<&str>,
        endpoint: Option<&str>,
        name_prefix: Option<&str>,
        tag: Option<(&str, Option<&str>)>,
    ) -> Result<Vec<Listed>, StoreError> {
        let conf = sdk_config(region, endpoint).await;
        let client = client(&conf);
        // For error messages only, so they name what was being listed.
        let what = AwsStore {
            client: client.clone(),
            secret_id: format!(
                "list of secrets{}{}",
                name_prefix
                    .map(|p| format!(" under `{p}`"))
                    .unwrap_or_default(),
                tag.map(|(k, v)| format!(
                    " tagged `{k}`{}",
                    v.map(|v| format!("=`{v}`")).unwrap_or_default()
                ))
                .unwrap_or_default()
            ),
            json_key: None,
        };
        let filters = list_filters(name_prefix, tag);
        let mut out = Vec::new();
        let mut next = None;
        let mut pager = Pager::new(MAX_LIST_PAGES);
        loop {
            let page = client
                .list_secrets()
                .set_filters(Some(filters.clone()))
                .max_results(100)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| what.map_err(e))?;
            out.extend(
                page.secret_list()
                    .iter()
                    .filter_map(|e| listed(e, name_prefix, tag)),
            );
            next = pager.next_of(page.next_token(), &what, "ListSecrets")?;
            if next.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// A store using an already loaded SDK configuration (explicit credentials, shared clients).
    pub fn from_sdk_config(
        conf: &aws_config::SdkConfig,
        secret_id: &str,
        json_key: Option<String>,
    ) -> Self {
        AwsStore {
            client: client(conf),
            secret_id: secret_id.to_string(),
            json_key,
        }
    }

    /// Every version that carries at least one label, with its labels.
    async fn versions(&self) -> Result<Vec<SecretVersionsListEntry>, StoreError> {
        let mut out = Vec::new();
        let mut next = None;
        let mut pager = Pager::new(MAX_VERSION_PAGES);
        loop {
            let page = self
                .client
                .list_secret_version_ids()
                .secret_id(&self.secret_id)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| self.map_err(e))?;
            out.extend(page.versions().iter().cloned());
            next = pager.next_of(page.next_token(), self, "ListSecretVersionIds")?;
            if next.is_none() {
                return Ok(out);
            }
        }
    }

    /// The version carrying `stage` (skipping one that is also `AWSCURRENT` when
    /// `not_current`: Secrets Manager leaves `AWSPENDING` on a promoted version until it is
    /// removed, and that is the current token, not a candidate). Listing and reading are two
    /// calls; when another writer moves the label in between, the read is refused, and the
    /// listing is simply done again.
    async fn labelled_version(
        &self,
        stage: &str,
        not_current: bool,
    ) -> Result<Option<(VersionId, Secret)>, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let versions = self.versions().await?;
            let Some(id) = labelled(&versions, stage) else {
                return Ok(None);
            };
            if not_current && has(&versions, &id, AWSCURRENT) {
                return Ok(None);
            }
            match self.read_version(Some(&id.0), stage).await {
                Ok((id, text)) => return Ok(Some((id, self.token_of(text)?))),
                Err(StoreError::Conflict { .. }) if tries < 3 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one version's string, by id or by stage, and returns its id and the whole string.
    /// A version that no longer carries `stage` (moved since it was listed) is
    /// [`StoreError::Conflict`].
    async fn read_version(
        &self,
        version_id: Option<&str>,
        stage: &str,
    ) -> Result<(VersionId, Secret), StoreError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .set_version_id(version_id.map(str::to_string))
            .version_stage(stage)
            .send()
            .await
            .map_err(|e| match self.map_err(e) {
                // Asked for a (version, stage) pair that no longer goes together: the label
                // moved between listing and reading.
                StoreError::Broken { store, problem }
                    if version_id.is_some() && problem.starts_with("InvalidRequestException") =>
                {
                    StoreError::Conflict {
                        store,
                        detail: format!("the {stage} label moved while it was read"),
                    }
                }
                other => other,
            })?;
        let Some(text) = out.secret_string() else {
            return Err(
                self.broken("the secret has no SecretString (binary secrets are not supported)")
            );
        };
        let id = out.version_id().unwrap_or_default().to_string();
        Ok((VersionId(id), Secret::new(text)))
    }

    /// The token inside a whole secret string: the string itself, or its `json_key`.
    fn token_of(&self, text: Secret) -> Result<Secret, StoreError> {
        match &self.json_key {
            None => Ok(text),
            Some(key) => extract_key(text.expose(), key).map_err(|p| self.broken(p)),
        }
    }

    /// Moves `stage` as one `UpdateSecretVersionStage`. Secrets Manager refuses the call with
    /// `InvalidParameterException` when `remove_from` no longer carries the label: that is a lost
    /// compare-and-swap, reported as a conflict.
    async fn move_stage(
        &self,
        stage: &str,
        move_to: Option<&VersionId>,
        remove_from: Option<&VersionId>,
    ) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .set_move_to_version_id(move_to.map(|v| v.0.clone()))
            .set_remove_from_version_id(remove_from.map(|v| v.0.clone()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let code = e.as_service_error().and_then(|se| se.code());
                if code == Some("InvalidParameterException") {
                    let msg = e
                        .as_service_error()
                        .and_then(|se| se.message())
                        .unwrap_or_default()
                        .to_string();
                    StoreError::Conflict {
                        store: self.describe(),
                        detail: format!("moving {stage}: {msg}"),
                    }
                } else {
                    self.map_err(e)
                }
            })
    }

    fn broken(&self, problem: impl Into<String>) -> StoreError {
        StoreError::Broken {
            store: self.describe(),
            problem: problem.into(),
        }
    }

    fn conflict(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Conflict {
            store: self.describe(),
            detail: detail.into(),
        }
    }

    /// Maps an SDK error to what the caller does next.
    pub(crate) fn map_err<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        e: SdkError<E>,
    ) -> StoreError {
        let store = self.describe();
        match &e {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("Unknown").to_string();
                let msg = se.err().message().unwrap_or_default().to_string();
                match code.as_str() {
                    "ResourceNotFoundException" => StoreError::Missing {
                        store,
                        hint: format!(
                            "create the secret or give it an {AWSCURRENT} version: `aws secretsmanager put-secret-value --secret-id {} --secret-string file:///dev/stdin`",
                            self.secret_id
                        ),
                    },
                    // Only a reused request token with another value gets here (the value is
                    // never in the message).
                    "ResourceExistsException" => StoreError::Conflict {
                        store,
                        detail: format!("{code}: {msg}"),
                    },
                    "ThrottlingException"
                    | "InternalServiceError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
                    | "RequestTimeout" => StoreError::Unavailable {
                        store,
                        cause: format!("{code}: {msg}"),
                    },
                    _ => StoreError::Broken {
                        store,
                        problem: format!("{code}: {msg}"),
                    },
                }
            }
            SdkError::ConstructionFailure(_) => StoreError::Broken {
                store,
                problem: error_chain(&e),
            },
            _ if over_size(&e) => StoreError::Unavailable {
                store,
                cause: format!(
                    "an answer larger than {} MiB, not read further (is the endpoint Secrets Manager?)",
                    MAX_AWS_BODY / (1024 * 1024)
                ),
            },
            _ => StoreError::Unavailable {
                store,
                cause: error_chain(&e),
            },
        }
    }
}

/// The `ListSecrets` filters for a name prefix and/or a tag key (and value).
fn list_filters(
    name_prefix: Option<&str>,
    tag: Option<(&str, Option<&str>)>,
) -> Vec<aws_sdk_secretsmanager::types::Filter> {
    use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
    let filter = |key, value: &str| Filter::builder().key(key).values(value).build();
    let mut filters = Vec::new();
    if let Some(p) = name_prefix {
        filters.push(filter(FilterNameStringType::Name, p));
    }
    if let Some((k, v)) = tag {
        filters.push(filter(FilterNameStringType::TagKey, k));
        if let Some(v) = v {
            filters.push(filter(FilterNameStringType::TagValue, v));
        }
    }
    filters
}

/// One entry of a `ListSecrets` page, unless it is scheduled for deletion or does not match
/// what was asked.
fn listed(
    e: &aws_sdk_secretsmanager::types::SecretListEntry,
    name_prefix: Option<&str>,
    tag: Option<(&str, Option<&str>)>,
) -> Option<Listed> {
    let name = e.name()?;
    if e.deleted_date().is_some() {
        return None;
    }
    // The service's filters are looser than what was asked (a name filter is
    // case-insensitive, and a key and a value may match on different tags).
    if name_prefix.is_some_and(|p| !name.starts_with(p)) {
        return None;
    }
    let tags: Vec<(String, String)> = e
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    if let Some((k, v)) = tag
        && !tags
            .iter()
            .any(|(tk, tv)| tk == k && v.is_none_or(|v| v == tv))
    {
        return None;
    }
    Some(Listed {
        name: name.to_string(),
        tags,
    })
}

/// Whether `e` is [`BodyCap`]'s limit: a body that grew past [`MAX_AWS_BODY`].
pub(crate) fn over_size(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// One secret found by [`AwsStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The secret's name.
    pub name: String,
    /// Its tags, key and value.
    pub tags: Vec<(String, String)>,
}

/// How long connecting to Secrets Manager may take.
pub const STORE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long one attempt of a Secrets Manager call may take (the SDK retries a timed-out one).
pub const STORE_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest Secrets Manager answer read. A secret value is at most 64 KiB and a page of a
/// listing a few hundred kilobytes; the SDK itself reads any body whole (an endless one until
/// the operation timeout: 4 GB in 15 s on loopback), so [`BodyCap`] stops it here.
pub const MAX_AWS_BODY: usize = 4 * 1024 * 1024;

/// A Secrets Manager client from `conf` whose responses are read through [`BodyCap`].
fn client(conf: &aws_config::SdkConfig) -> Client {
    Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(conf)
            .interceptor(BodyCap)
            .build(),
    )
}

/// Wraps every response body in a limit of [`MAX_AWS_BODY`] bytes before the SDK reads it: an
/// over-size body fails the read as it passes the limit (a transient error, retried by the
/// SDK and then reported as `Unavailable`) instead of filling memory.
#[derive(Debug)]
pub(crate) struct BodyCap;

impl aws_sdk_secretsmanager::config::Intercept for BodyCap {
    fn name(&self) -> &'static str {
        "tokenwarden::BodyCap"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_secretsmanager::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _components: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _cfg: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), aws_sdk_secretsmanager::error::BoxError> {
        let body = context.response_mut().take_body();
        *context.response_mut().body_mut() = aws_smithy_types::body::SdkBody::from_body_1_x(
            http_body_util::Limited::new(body, MAX_AWS_BODY),
        );
        Ok(())
    }
}

/// Most pages of `ListSecrets` one listing reads: 100,000 secrets at 100 a page, far beyond a
/// real group, and a bound on an endpoint that keeps answering with a new `NextToken`.
pub const MAX_LIST_PAGES: usize = 1000;

/// Most pages of `ListSecretVersionIds` one read walks. Secrets Manager keeps about 100
/// versions of a secret and lists up to 100 a page (fewer under load), so 20 pages leave
/// ample room, and a bound on an endpoint that never stops paging.
pub const MAX_VERSION_PAGES: usize = 20;

/// Follows `NextToken`s: stops at the end, and refuses a token it has already been given (an
/// endpoint or proxy that would page forever) or a page beyond its bound.
struct Pager {
    seen: std::collections::HashSet<String>,
    pages: usize,
    max: usize,
}

impl Pager {
    fn new(max: usize) -> Pager {
        Pager {
            seen: std::collections::HashSet::new(),
            pages: 0,
            max,
        }
    }

    /// The token for the next page after a page that came with `token`: `None` at the end
    /// (moto answers the last page with an empty token rather than none).
    fn next(&mut self, token: Option<&str>) -> Result<Option<String>, String> {
        self.pages += 1;
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if !self.seen.insert(token.to_string()) {
            return Err(format!(
                "answered page {} with a NextToken it had already sent (a broken endpoint or proxy); stopped paging",
                self.pages
            ));
        }
        if self.pages >= self.max {
            return Err(format!(
                "still had more after {} pages; stopped paging (a broken endpoint, or far more than tokenwarden expects)",
                self.pages
            ));
        }
        Ok(Some(token.to_string()))
    }

    /// [`Pager::next`] for `operation` on `store`: a paging fault makes the store unavailable.
    fn next_of(
        &mut self,
        token: Option<&str>,
        store: &AwsStore,
        operation: &str,
    ) -> Result<Option<String>, StoreError> {
        self.next(token).map_err(|cause| StoreError::Unavailable {
            store: store.describe(),
            cause: format!("{operation} {cause}"),
        })
    }
}

/// How long a Secrets Manager call may take in all, retries included.
pub const STORE_OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The SDK configuration for a region and endpoint, loaded once per process: loading walks the
/// credential chain (files, environment, instance metadata), which thousands of tokens in one
/// account must not repeat.
pub(crate) async fn sdk_config(
    region: Option<&str>,
    endpoint: Option<&str>,
) -> aws_config::SdkConfig {
    type Cache = std::sync::Mutex<
        std::collections::HashMap<(Option<String>, Option<String>), aws_config::SdkConfig>,
    >;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let key = (region.map(str::to_string), endpoint.map(str::to_string));
    let cache = CACHE.get_or_init(Cache::default);
    if let Some(c) = cache.lock().expect("not poisoned").get(&key) {
        return c.clone();
    }
    // The SDK sets no read timeout by default: a server that accepts the connection and never
    // answers would hold a check (and the daemon's loop, and its shutdown) forever.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(STORE_CONNECT_TIMEOUT)
        .operation_attempt_timeout(STORE_ATTEMPT_TIMEOUT)
        .operation_timeout(STORE_OPERATION_TIMEOUT)
        .build();
    let mut loader =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    let conf = loader.load().await;
    cache
        .lock()
        .expect("not poisoned")
        .insert(key, conf.clone());
    conf
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The id of the version carrying `stage`, if any.
fn labelled(versions: &[SecretVersionsListEntry], stage: &str) -> Option<VersionId> {
    versions
        .iter()
        .find(|v| v.version_stages().iter().any(|s| s == stage))
        .and_then(|v| v.version_id().map(|id| VersionId(id.to_string())))
}

fn has(versions: &[SecretVersionsListEntry], id: &VersionId, stage: &str) -> bool {
    versions
        .iter()
        .filter(|v| v.version_id() == Some(id.0.as_str()))
        .any(|v| v.version_stages().iter().any(|s| s == stage))
}

impl SecretStore for AwsStore {
    async fn current(&self) -> Result<Secret, StoreError> {
        self.current_version().await.map(|(_, s)| s)
    }

    fn describe(&self) -> String {
        match &self.json_key {
            Some(k) => format!("AWS secret `{}` key `{k}`", self.secret_id),
            None => format!("AWS secret `{}`", self.secret_id),
        }
    }

    async fn current_version(&self) -> Result<(VersionId, Secret), StoreError> {
        let (id, text) = self.read_version(None, AWSCURRENT).await?;
        Ok((id, self.token_of(text)?))
    }

    async fn pending(&self) -> Result<Option<(VersionId, Secret)>, StoreError> {
        self.labelled_version(AWSPENDING, true).await
    }

    async fn previous(&self) -> Result<Option<(VersionId, Secret)>, StoreError> {
        self.labelled_version(AWSPREVIOUS, false).await
    }

    async fn version(&self, id: &VersionId) -> Result<Option<Secret>, StoreError> {
        match self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_id(&id.0)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                self.token_of(Secret::new(out.secret_string().unwrap_or_default()))?,
            )),
            Err(e)
                if e.as_service_error().and_then(|se| se.code())
                    == Some("ResourceNotFoundException") =>
            {
                Ok(None)
            }
            Err(e) => Err(self.map_err(e)),
        }
    }

    async fn put_pending(
        &self,
        token: &Secret,
        request_token: &str,
    ) -> Result<VersionId, StoreError> {
        super::check_request_token(&self.describe(), request_token)?;
        // A version's id is its request token. Look first: moto overwrites an AWSPENDING
        // version re-put with another value where AWS refuses, and either way a retry must
        // not depend on which.
        match self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_id(request_token)
            .send()
            .await
        {
            Ok(out) => {
                let existing =
                    self.token_of(Secret::new(out.secret_string().unwrap_or_default()))?;
                return if existing == *token {
                    Ok(VersionId(request_token.to_string()))
                } else {
                    Err(self.conflict(format!(
                        "request token `{request_token}` already staged a version with another value"
                    )))
                };
            }
            Err(e)
                if e.as_service_error().and_then(|se| se.code())
                    == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(self.map_err(e)),
        }
        let body = match &self.json_key {
            None => token.clone(),
            Some(key) => {
                let (_, current) = self.read_version(None, AWSCURRENT).await?;
                replace_key(current.expose(), key, token).map_err(|p| self.broken(p))?
            }
        };
        let out = self
            .client
            .put_secret_value()
            .secret_id(&self.secret_id)
            .client_request_token(request_token)
            .secret_string(body.expose())
            .version_stages(AWSPENDING)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        Ok(VersionId(
            out.version_id().unwrap_or(request_token).to_string(),
        ))
    }

    async fn promote(&self, to: &VersionId, from: &VersionId) -> Result<(), StoreError> {
        if to != from {
            self.move_stage(AWSCURRENT, Some(to), Some(from)).await?;
        } else if !has(&self.versions().await?, from, AWSCURRENT) {
            return Err(self.conflict(format!("{AWSCURRENT} is no longer on version `{from}`")));
        }
        // The promotion has happened; a leftover AWSPENDING on the current version is ignored
        // by `pending` and moved by the next `put_pending`, so failing to remove it is only
        // logged rather than reported as a failed promotion.
        let cleanup = async {
            if has(&self.versions().await?, to, AWSPENDING) {
                self.move_stage(AWSPENDING, None, Some(to)).await?;
            }
            Ok::<(), StoreError>(())
        };
        if let Err(e) = cleanup.await {
            tracing::warn!(store = %self.describe(), error = %e, "promoted, but {AWSPENDING} is still on the new version");
        }
        Ok(())
    }

    async fn rollback(&self) -> Result<VersionId, StoreError> {
        let versions = self.versions().await?;
        let Some(current) = labelled(&versions, AWSCURRENT) else {
            return Err(self.map_missing());
        };
        let Some(previous) = labelled(&versions, AWSPREVIOUS) else {
            return Err(self.broken(format!("there is no {AWSPREVIOUS} version to roll back to")));
        };
        // RemoveFromVersionId makes this a compare-and-swap on the version just read: if
        // someone promoted meanwhile, the move is refused. Secrets Manager then labels the
        // version it was removed from AWSPREVIOUS.
        self.move_stage(AWSCURRENT, Some(&previous), Some(&current))
            .await?;
        Ok(previous)
    }

    async fn clear_pending(&self) -> Result<(), StoreError> {
        let versions = self.versions().await?;
        if let Some(id) = labelled(&versions, AWSPENDING) {
            self.move_stage(AWSPENDING, None, Some(&id)).await?;
        }
        Ok(())
    }
}

impl AwsStore {
    fn map_missing(&self) -> StoreError {
        StoreError::Missing {
            store: self.describe(),
            hint: format!(
                "give the secret an {AWSCURRENT} version: `aws secretsmanager put-secret-value --secret-id {} --secret-string file:///dev/stdin`",
                self.secret_id
            ),
        }
    }
}

/// The members of a JSON object in their order, each value as its original text.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = m.next_entry::<String, Box<RawValue>>()? {
                    out.push(member);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `text` (a JSON object secret) with the string under `key` replaced by `token`. The other
/// members keep their order and the exact text of their values (numbers are not reformatted),
/// since other applications read them. Errors never quote the secret.
pub(crate) fn replace_key(text: &str, key: &str, token: &Secret) -> Result<Secret, String> {
    // Same checks and messages as reading: an object with `key` holding a string.
    extract_key(text, key)?;
    let members: Members = serde_json::from_str(text).map_err(|_| {
        format!("`json_key = \"{key}\"` is set but the secret is not a JSON object")
    })?;
    let new_value = Secret::new(serde_json::to_string(token.expose()).map_err(|e| e.to_string())?);
    let mut out = String::from("{");
    for (i, (k, v)) in members.0.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).map_err(|e| e.to_string())?);
        out.push(':');
        out.push_str(if k == key {
            new_value.expose()
        } else {
            v.get()
        });
    }
    out.push('}');
    Ok(Secret::new(out))
}

/// The string under `key` of a JSON object secret. Errors never quote the secret.
pub(crate) fn extract_key(text: &str, key: &str) -> Result<Secret, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| {
        format!("`json_key = \"{key}\"` is set but the secret is not a JSON object")
    })?;
    let obj = v.as_object().ok_or_else(|| {
        format!("`json_key = \"{key}\"` is set but the secret is not a JSON object")
    })?;
    match obj.get(key) {
        Some(serde_json::Value::String(s)) => Ok(Secret::new(s.clone())),
        Some(_) => Err(format!("key `{key}` of the secret is not a string")),
        None => {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            Err(format!(
                "the secret has no key `{key}` (its keys: {})",
                keys.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_stops_at_the_end_on_a_repeated_token_and_at_the_bound() {
        let mut p = Pager::new(3);
        assert_eq!(p.next(Some("a")).unwrap().as_deref(), Some("a"));
        assert_eq!(p.next(Some("b")).unwrap().as_deref(), Some("b"));
        assert_eq!(p.next(Some("")).unwrap(), None);

        let mut p = Pager::new(100);
        assert!(p.next(Some("same")).is_ok());
        let e = p.next(Some("same")).unwrap_err();
        assert!(e.contains("page 2") && e.contains("already sent"), "{e}");

        let mut p = Pager::new(3);
        assert!(p.next(Some("1")).is_ok());
        assert!(p.next(Some("2")).is_ok());
        let e = p.next(Some("3")).unwrap_err();
        assert!(e.contains("after 3 pages"), "{e}");
        // The last allowed page may still be the end.
        let mut p = Pager::new(3);
        assert!(p.next(Some("1")).is_ok());
        assert!(p.next(Some("2")).is_ok());
        assert_eq!(p.next(None).unwrap(), None);
    }

    #[test]
    fn replace_key_keeps_other_members_verbatim_and_never_quotes_values() {
        let text = r#"{ "a": 1.50, "T": "EAAold", "b": {"x": [1, 2]} }"#;
        let out = replace_key(text, "T", &Secret::new("EAA\"new")).unwrap();
        assert_eq!(
            out.expose(),
            r#"{"a":1.50,"T":"EAA\"new","b":{"x": [1, 2]}}"#
        );
        assert_eq!(extract_key(out.expose(), "T").unwrap().expose(), "EAA\"new");
        let e = replace_key(r#"{"T": 5, "p": "pw-canary"}"#, "T", &Secret::new("x")).unwrap_err();
        assert!(!e.contains("canary") && !e.contains('5'), "{e}");
        assert!(replace_key("[1]", "T", &Secret::new("x")).is_err());
    }

    #[test]
    fn json_key_extraction_never_quotes_values() {
        let text = r#"{"DB_PASSWORD":"pw-canary","WHATSAPP_ACCESS_TOKEN":"EAAtoken"}"#;
        assert_eq!(
            extract_key(text, "WHATSAPP_ACCESS_TOKEN").unwrap().expose(),
            "EAAtoken"
        );
        let e = extract_key(text, "TOKEN").unwrap_err();
        assert!(e.contains("DB_PASSWORD") && !e.contains("canary"), "{e}");
        assert!(
            extract_key("EAAcanary", "TOKEN")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(
            !extract_key(r#"{"TOKEN": 5}"#, "TOKEN")
                .unwrap_err()
                .contains('5')
        );
    }
}
