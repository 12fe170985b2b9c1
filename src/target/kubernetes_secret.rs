//! The `kubernetes_secret` target: one key of a Kubernetes Secret that pods read, then
//! optionally a rollout restart of the Deployments and StatefulSets that use it, waited for
//! until it completes.
//!
//! Source: the Kubernetes API reference, core `v1` Secret and `apps/v1` Deployment and
//! StatefulSet (<https://kubernetes.io/docs/reference/kubernetes-api/>; API conventions on
//! optimistic concurrency: <https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#concurrency-control-and-consistency>),
//! called through the `kube` crate (kube-rs) with `k8s-openapi`'s `v1_33` types.
//!
//! A push reads the Secret (`GET /api/v1/namespaces/{ns}/secrets/{name}`) and, unless the key
//! already holds the token, sends a JSON merge patch of `data.{key}` that carries the
//! `metadata.resourceVersion` it read: the API server refuses it with 409 Conflict when another
//! writer changed the Secret meanwhile, and the push reads again and retries. Other keys are
//! untouched (a merge patch names only the one). Then each workload of `restart` gets the
//! annotation `kubectl rollout restart` sets (`kubectl.kubernetes.io/restartedAt`) on its pod
//! template, and the push waits until the rollout completes: `status.observedGeneration` has
//! reached the patched `metadata.generation` and every replica is updated and available (a
//! StatefulSet: updated and ready, `currentRevision == updateRevision`). A rollout that does
//! not complete within the target's timeout fails the target, and the rollout puts the old
//! token back (and restarts again).
//!
//! Credentials: a kubeconfig file and context, or the pod's service account (in-cluster). The
//! client takes no proxy from the environment, `http://` only to loopback. Least privilege (the
//! Role in `deploy/kubernetes-rbac.yaml`): `get` and `patch` on the one Secret, and `get` and
//! `patch` on the named workloads.
//!
//! Retries: 409 re-reads; 429, 5xx and transport failures are retried with backoff (kube's own
//! retry layer is off, so the target's timeout bounds the whole push). 401 and 403 are refused
//! naming the verbs the Role needs. Messages are scrubbed of the token and of the kubeconfig's
//! bearer token.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, Patch, PatchParams};

use super::TargetError;
use crate::config::{Workload, WorkloadKind};
use crate::scrub::Scrubber;
use crate::secret::{Fingerprint, Secret};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// How often a rollout's status is read while it has not completed.
pub const ROLLOUT_POLL: Duration = Duration::from_millis(500);

/// Attempts of one API call that meets a conflict, a rate limit or a server error.
const ATTEMPTS: u32 = 5;

/// A key of a Kubernetes Secret receiving the token.
#[derive(Clone)]
pub struct KubernetesSecret {
    client: kube::Client,
    namespace: String,
    name: String,
    key: String,
    restart: Vec<Workload>,
    timeout: Duration,
    /// The kubeconfig's bearer token, scrubbed from every message (empty in-cluster: the
    /// service account's token is read by kube itself, and renewed).
    credential: Scrubber,
}

impl std::fmt::Debug for KubernetesSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSecret")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("key", &self.key)
            .finish()
    }
}

/// Why one call failed, for the retry loop.
enum Failure {
    Conflict(String),
    Retry(String),
    Final(TargetError),
}

impl KubernetesSecret {
    /// Connects with `kubeconfig` and `context` (else its current context), or without a
    /// kubeconfig as the pod's service account; a call may take `timeout` (the target's).
    ///
    /// # Errors
    /// [`TargetError::Refused`] when the kubeconfig or the service account cannot be read,
    /// or the API server's URL is plain http off loopback.
    pub async fn connect(
        kubeconfig: Option<&std::path::Path>,
        context: Option<&str>,
        namespace: String,
        name: String,
        key: String,
        restart: Vec<Workload>,
        timeout: Duration,
    ) -> Result<KubernetesSecret, TargetError> {
        let refused = |e: String| TargetError::Refused(format!("Kubernetes credentials: {e}"));
        let mut config = match kubeconfig {
            None => kube::Config::incluster().map_err(|e| {
                refused(format!(
                    "not running in a cluster with a service account ({e}); set `kubeconfig`"
                ))
            })?,
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| refused(format!("{}: {e}", path.display())))?;
                let options = kube::config::KubeConfigOptions {
                    context: context.map(str::to_string),
                    ..Default::default()
                };
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| refused(format!("{}: {e}", path.display())))?
            }
        };
        let url = &config.cluster_url;
        let loopback = url
            .host()
            .map(|h| {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
            .unwrap_or(false);
        if url.scheme_str() != Some("https") && !(url.scheme_str() == Some("http") && loopback) {
            return Err(refused(format!(
                "the API server {} is not https (plain http only to loopback)",
                url.host().unwrap_or("(no host)")
            )));
        }
        // The target's timeout bounds every call; the push's own loop retries (kube's retry
        // layer would wait up to 1,000 s on a `Retry-After`).
        config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        config.default_retry = false;
        // kube takes `HTTPS_PROXY` from the environment for a kubeconfig; a proxy would see
        // the credential and the token, so the API server is reached directly, as configured.
        config.proxy_url = None;
        let mut credential = Scrubber::new();
        if let Some(t) = &config.auth_info.token {
            use secrecy::ExposeSecret;
            credential.add(t.expose_secret());
        }
        let client = kube::Client::try_from(config).map_err(|e| refused(e.to_string()))?;
        Ok(KubernetesSecret {
            client,
            namespace,
            name,
            key,
            restart,
            timeout,
            credential,
        })
    }

    /// The Secret in words.
    pub fn describe(&self) -> String {
        let restart = if self.restart.is_empty() {
            String::new()
        } else {
            format!(
                ", restarting {}",
                self.restart
                    .iter()
                    .map(Workload::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "Kubernetes secret {}/{} key {}{restart}",
            self.namespace, self.name, self.key
        )
    }

    fn secrets(&self) -> Api<KubeSecret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Writes the key (optimistic concurrency), then restarts the workloads and waits for
    /// their rollouts; returns whether the Secret changed.
    ///
    /// # Errors
    /// [`TargetError::Refused`] for a missing Secret or workload, a refused credential (naming
    /// the Role's verbs), a rollout that did not complete; [`TargetError::Transient`] for an
    /// API server that kept failing.
    pub async fn push(&self, token: &Secret) -> Result<bool, TargetError> {
        let started = tokio::time::Instant::now();
        let mut scrub = self.credential.clone();
        scrub.add(token.expose());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = match self.secrets().get(&self.name).await {
                Ok(s) => s,
                Err(e) => match self.classify(e, "get", "secrets", &self.name, &scrub) {
                    Failure::Final(e) => return Err(e),
                    Failure::Conflict(why) | Failure::Retry(why) => {
                        self.pause(attempt, &why).await?;
                        continue;
                    }
                },
            };
            if value_of(&current, &self.key) == Some(token.fingerprint()) {
                return Ok(false);
            }
            let version = current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            let mut data = serde_json::Map::new();
            data.insert(
                self.key.clone(),
                crate::scrub::base64(token.expose().as_bytes()).into(),
            );
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": version},
                "data": data,
            });
            match self
                .secrets()
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(e) => match self.classify(e, "patch", "secrets", &self.name, &scrub) {
                    Failure::Final(e) => return Err(e),
                    Failure::Conflict(why) => {
                        tracing::debug!(secret = %self.name, attempt, "the secret changed since it was read; reading it again");
                        if attempt >= ATTEMPTS {
                            return Err(TargetError::Transient(format!(
                                "{}: {why} ({attempt} attempts)",
                                self.describe()
                            )));
                        }
                    }
                    Failure::Retry(why) => self.pause(attempt, &why).await?,
                },
            }
        }
        for w in &self.restart {
            self.restart(w, started).await?;
        }
        Ok(true)
    }

    /// Waits before attempt `attempt + 1`, or gives up as transient after the last.
    async fn pause(&self, attempt: u32, why: &str) -> Result<(), TargetError> {
        if attempt >= ATTEMPTS {
            return Err(TargetError::Transient(format!(
                "{}: {why} ({attempt} attempts)",
                self.describe()
            )));
        }
        let delay = crate::graph::backoff(Duration::from_millis(300), attempt);
        tracing::debug!(secret = %self.name, attempt, delay_ms = delay.as_millis() as u64, error = %why, "Kubernetes call failed, retrying");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Sets the restart annotation on `w`'s pod template and waits for its rollout, until
    /// `started + timeout` (less a second, for the error to be this one, not the rollout's
    /// cut-off).
    async fn restart(
        &self,
        w: &Workload,
        started: tokio::time::Instant,
    ) -> Result<(), TargetError> {
        let scrub = self.credential.clone();
        let now = jiff::Timestamp::now().to_string();
        let patch = serde_json::json!({
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
        });
        let resource = w.kind.resource();
        let deadline = started + self.timeout.saturating_sub(Duration::from_secs(1));
        let mut attempt = 0;
        let generation = loop {
            attempt += 1;
            let patched = match w.kind {
                WorkloadKind::Deployment => {
                    Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
                        .patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|d| d.metadata.generation)
                }
                WorkloadKind::StatefulSet => {
                    Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
                        .patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|d| d.metadata.generation)
                }
            };
            match patched {
                Ok(g) => break g.unwrap_or(0),
                Err(e) => match self.classify(e, "patch", resource, &w.name, &scrub) {
                    Failure::Final(e) => return Err(e),
                    Failure::Conflict(why) | Failure::Retry(why) => {
                        self.pause(attempt, &why).await?
                    }
                },
            }
        };
        loop {
            let progress = match w.kind {
                WorkloadKind::Deployment => {
                    Api::<Deployment>::namespaced(self.client.clone(), &self.namespace)
                        .get(&w.name)
                        .await
                        .map(|d| deployment_progress(&d, generation))
                }
                WorkloadKind::StatefulSet => {
                    Api::<StatefulSet>::namespaced(self.client.clone(), &self.namespace)
                        .get(&w.name)
                        .await
                        .map(|s| stateful_set_progress(&s, generation))
                }
            };
            let progress = match progress {
                Ok(p) => p,
                Err(e) => match self.classify(e, "get", resource, &w.name, &scrub) {
                    Failure::Final(e) => return Err(e),
                    Failure::Conflict(why) | Failure::Retry(why) => Err(why),
                },
            };
            match progress {
                Ok(()) => return Ok(()),
                Err(state) if tokio::time::Instant::now() + ROLLOUT_POLL >= deadline => {
                    return Err(TargetError::Refused(format!(
                        "{}: the rollout of {w} did not complete within {}: {state}",
                        self.describe(),
                        super::exec::human(self.timeout)
                    )));
                }
                Err(state) => {
                    tracing::debug!(workload = %w, %state, "waiting for the rollout");
                    tokio::time::sleep(ROLLOUT_POLL).await;
                }
            }
        }
    }

    /// The fingerprint of the token the key holds, `None` when the key is absent.
    ///
    /// # Errors
    /// As [`KubernetesSecret::push`].
    pub async fn read_back(&self) -> Result<Option<Fingerprint>, TargetError> {
        let scrub = &self.credential;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.secrets().get(&self.name).await {
                Ok(s) => return Ok(value_of(&s, &self.key)),
                Err(e) => match self.classify(e, "get", "secrets", &self.name, scrub) {
                    Failure::Final(e) => return Err(e),
                    Failure::Conflict(why) | Failure::Retry(why) => {
                        self.pause(attempt, &why).await?
                    }
                },
            }
        }
    }

    /// What a failed call means: a conflict, worth a retry, or final.
    fn classify(
        &self,
        e: kube::Error,
        verb: &str,
        resource: &str,
        name: &str,
        scrub: &Scrubber,
    ) -> Failure {
        let place = self.describe();
        match e {
            kube::Error::Api(status) => {
                let msg = scrub.scrub(&status.message);
                match status.code {
                    401 => Failure::Final(TargetError::Refused(format!(
                        "{place}: the API server refused the credentials (401 {}): {msg}; renew the kubeconfig's or the service account's token",
                        status.reason
                    ))),
                    403 => Failure::Final(TargetError::Refused(format!(
                        "{place}: {verb} {resource}/{name} forbidden (403): {msg}; the Role bound to tokenwarden needs `{verb}` on {resource} `{name}` in namespace `{}` (deploy/kubernetes-rbac.yaml)",
                        self.namespace
                    ))),
                    404 => Failure::Final(TargetError::Refused(format!(
                        "{place}: {resource}/{name} not found in namespace `{}` (404): {msg}; tokenwarden updates a Secret, it does not create it",
                        self.namespace
                    ))),
                    409 => Failure::Conflict(format!("conflict (409): {msg}")),
                    429 | 500..=599 => Failure::Retry(format!(
                        "{verb} {resource}/{name}: answered {} {}: {msg}",
                        status.code, status.reason
                    )),
                    code => Failure::Final(TargetError::Refused(format!(
                        "{place}: {verb} {resource}/{name}: answered {code} {}: {msg}",
                        status.reason
                    ))),
                }
            }
            other => Failure::Retry(format!(
                "{verb} {resource}/{name}: {}",
                scrub.scrub(&crate::store::aws::error_chain(&other))
            )),
        }
    }
}

/// The fingerprint of `key` in `s`'s data (or `stringData`, which the API server folds into
/// data but a test double may not).
fn value_of(s: &KubeSecret, key: &str) -> Option<Fingerprint> {
    if let Some(v) = s.data.as_ref().and_then(|d| d.get(key)) {
        return Some(Secret::new(String::from_utf8_lossy(&v.0).into_owned()).fingerprint());
    }
    s.string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| Secret::new(v.clone()).fingerprint())
}

/// Whether a Deployment's rollout of `generation` completed, or where it stands.
fn deployment_progress(d: &Deployment, generation: i64) -> Result<(), String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    if observed < generation {
        Err(format!(
            "generation {generation} not observed yet (at {observed})"
        ))
    } else if updated < want || total > updated || available < updated {
        Err(format!(
            "{updated} of {want} replicas updated, {available} available, {total} in all"
        ))
    } else {
        Ok(())
    }
}

/// Whether a StatefulSet's rollout of `generation` completed, or where it stands.
fn stateful_set_progress(s: &StatefulSet, generation: i64) -> Result<(), String> {
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = s.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    if observed < generation {
        Err(format!(
            "generation {generation} not observed yet (at {observed})"
        ))
    } else if updated < want || ready < want || st.current_revision != st.update_revision {
        Err(format!(
            "{updated} of {want} replicas updated, {ready} ready"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn deployment(
        generation: i64,
        observed: i64,
        updated: i32,
        available: i32,
        total: i32,
    ) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                replicas: Some(total),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_deployment_rollout_completes_only_when_every_replica_is_new_and_available() {
        assert!(
            deployment_progress(&deployment(5, 4, 3, 3, 3), 5).is_err(),
            "not observed"
        );
        assert!(
            deployment_progress(&deployment(5, 5, 2, 3, 4), 5).is_err(),
            "one old pod left"
        );
        assert!(
            deployment_progress(&deployment(5, 5, 3, 2, 3), 5).is_err(),
            "one not available"
        );
        assert!(
            deployment_progress(&deployment(5, 5, 3, 3, 4), 5).is_err(),
            "an old pod terminating"
        );
        assert_eq!(deployment_progress(&deployment(5, 5, 3, 3, 3), 5), Ok(()));
    }

    #[test]
    fn a_stateful_set_rollout_completes_only_on_the_update_revision_with_every_replica_ready() {
        use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
        let sts = |observed: i64, updated: i32, ready: i32, current: &str| StatefulSet {
            metadata: kube::api::ObjectMeta::default(),
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                current_revision: Some(current.into()),
                update_revision: Some("worker-2".into()),
                replicas: 2,
                ..Default::default()
            }),
        };
        assert!(
            stateful_set_progress(&sts(3, 2, 2, "worker-2"), 4).is_err(),
            "not observed"
        );
        assert!(
            stateful_set_progress(&sts(4, 1, 2, "worker-1"), 4).is_err(),
            "one old pod"
        );
        assert!(
            stateful_set_progress(&sts(4, 2, 1, "worker-2"), 4).is_err(),
            "one not ready"
        );
        assert!(
            stateful_set_progress(&sts(4, 2, 2, "worker-1"), 4).is_err(),
            "old revision"
        );
        assert_eq!(stateful_set_progress(&sts(4, 2, 2, "worker-2"), 4), Ok(()));
    }
}
