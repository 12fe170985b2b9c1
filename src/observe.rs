//! The check of one token, or of many together: read the current value from its store, ask
//! Graph (`debug_token`, alone or in batches), prove it works with the reads of the one
//! usability rule ([`crate::usable`]), and turn all that into a [`Verdict`] and facts.
//!
//! Below the daemon, `check` and rotation, which all use it; it decides nothing about alerts
//! or rotations and writes nothing.

use std::path::Path;

use crate::config::{Config, Kind, StoreConfig, TokenConfig};
use crate::graph::{self, GraphClient, GraphError, Transient, facts_of};
use crate::policy::{TokenFacts, Verdict};
use crate::secret::Fingerprint;
use crate::secret::Secret;
use crate::state::{EXPIRY_DIR, Layout, RecordStore, StateError};
use crate::store::{SecretStore, Store, StoreError};
use crate::usable::Usability;

/// Reads, inspects and proves one token; returns the verdict and, when Graph answered, facts.
pub async fn observe(
    cfg: &Config,
    t: &TokenConfig,
    graph: &GraphClient,
) -> (Verdict, Option<TokenFacts>) {
    let token = match read_current(&t.store, &t.name, &cfg.state_dir).await {
        Ok(v) => v,
        Err(v) => return (v, None),
    };
    let info = inspect(&cfg.state_dir, t, graph, &token).await;
    let (verdict, facts) = judge(t, &token, info, graph).await;
    (
        whose_refusal(verdict, t.kind, graph, &AppCheck::new()).await,
        facts,
    )
}

/// The answer of [`GraphClient::app_credentials`], asked at most once per check pass.
type AppCheck = tokio::sync::OnceCell<Result<(), GraphError>>;

/// A refused inspection is either tokenwarden's app (its secret wrong or reset: the app's
/// trouble, told once for the app) or this token (made for another app: the token's trouble).
/// Meta's message says which, but messages are never parsed (reference section 8): the app
/// token's own inspection tells them apart, asked once for all the tokens of a pass.
async fn whose_refusal(
    verdict: Verdict,
    kind: Kind,
    graph: &GraphClient,
    app: &AppCheck,
) -> Verdict {
    let Verdict::OwnCredentials { detail } = verdict else {
        return verdict;
    };
    if !kind.debug_token() {
        // Not inspected with tokenwarden's app, so not its trouble: the kind's own read was
        // refused, and a person must look (never silent, never a dead token).
        return Verdict::Unusable {
            reason: format!("{} refused GET /me: {detail}", kind.host()),
        };
    }
    match app.get_or_init(|| graph.app_credentials()).await {
        Ok(()) => Verdict::OtherApp { detail },
        Err(GraphError::Transient(e)) => Verdict::Unreachable {
            detail: format!(
                "Meta refused to inspect the token ({detail}), and whether tokenwarden's own app credentials work could not be checked: {e}"
            ),
        },
        Err(_) => Verdict::OwnCredentials { detail },
    }
}

/// What Meta says about `token` of `t`'s kind, as a [`graph::TokenInfo`]: `debug_token` for
/// `whatsapp`; for Instagram and Threads (which `debug_token` does not inspect) the kind's
/// `GET /me`, valid when it answers, with the expiry Meta gave in `expires_in` when
/// tokenwarden last renewed it ([`ExpiryLog`]), unknown otherwise. A refusal with code 190
/// is an invalid token, as `debug_token` would say.
///
/// # Errors
/// Anything but a dead token, classified as the client does.
pub async fn inspect(
    state_dir: &Path,
    t: &TokenConfig,
    graph: &GraphClient,
    token: &Secret,
) -> Result<graph::TokenInfo, GraphError> {
    if t.kind.debug_token() {
        return graph.debug_token(token).await;
    }
    let recorded = ExpiryLog::new(state_dir).find(&t.name, token.fingerprint());
    let mut info = graph::TokenInfo {
        is_valid: Some(true),
        app_id: None,
        token_type: t.kind.token_type().map(str::to_string),
        application: None,
        expires_at: recorded
            .and_then(|r| r.expires_at)
            .map_or(graph::Expiry::Unknown, graph::Expiry::At),
        data_access_expires_at: None,
        issued_at: recorded
            .filter(|r| r.expires_at.is_some())
            .map(|r| r.issued_at),
        scopes: Vec::new(),
        granular_scopes: Vec::new(),
        user_id: None,
        profile_id: None,
        error: None,
    };
    match graph.kind_me(t.kind, token).await {
        Ok(account) => info.user_id = Some(account.id),
        Err(GraphError::TokenDead(api)) => {
            info.is_valid = Some(false);
            info.error = Some(api);
        }
        Err(e) => return Err(e),
    }
    Ok(info)
}

/// Expiries Meta stated (`expires_in`) for tokens `debug_token` cannot inspect, kept per token
/// in `expiry/<token>.json` by fingerprint: written when a renewal returns, before the new
/// token is staged (so a crash cannot leave a token whose expiry nobody knows), read by every
/// check. Only the last few fingerprints are kept: the current token, its successor, and the
/// one before.
#[derive(Debug, Clone)]
pub struct ExpiryLog {
    records: RecordStore,
}

/// One token version's recorded life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedExpiry {
    /// Which token version.
    pub fingerprint: Fingerprint,
    /// When Meta made it (the renewal's time); for an entry without `expires_at`, when Meta
    /// refused to refresh it, so that it is not asked again for a day (a token younger than
    /// 24 hours is not refreshed).
    pub issued_at: jiff::Timestamp,
    /// The renewal's time plus Meta's `expires_in`; `None` when unknown.
    pub expires_at: Option<jiff::Timestamp>,
}

/// How many token versions an [`ExpiryLog`] record keeps.
const EXPIRY_KEPT: usize = 4;

impl ExpiryLog {
    /// The records under `state_dir`.
    pub fn new(state_dir: &Path) -> ExpiryLog {
        ExpiryLog {
            records: RecordStore::new(state_dir.join(EXPIRY_DIR), Layout::Pretty)
                .aside_loses("the recorded expiries are then unknown until the next renewal"),
        }
    }

    /// The recorded life of `token`'s version `fingerprint`, if any. An unreadable record is
    /// "unknown" here (a check never fails on it; the next renewal rewrites it).
    pub fn find(&self, token: &str, fingerprint: Fingerprint) -> Option<RecordedExpiry> {
        let list: Vec<RecordedExpiry> = match self.records.load(token) {
            Ok(l) => l.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(token, error = %e, "cannot read the recorded expiries; the expiry is unknown");
                Vec::new()
            }
        };
        list.into_iter()
            .rev()
            .find(|r| r.fingerprint == fingerprint)
    }

    /// Records `entry` (replacing an older entry for the same version).
    ///
    /// # Errors
    /// [`StateError`] when the record cannot be written.
    pub fn record(&self, token: &str, entry: RecordedExpiry) -> Result<(), StateError> {
        let mut list: Vec<RecordedExpiry> =
            self.records.load(token).ok().flatten().unwrap_or_default();
        list.retain(|r| r.fingerprint != entry.fingerprint);
        list.push(entry);
        let skip = list.len().saturating_sub(EXPIRY_KEPT);
        self.records.save(token, &list[skip..])
    }
}

/// Graph batch requests in flight during a daemon's check of many tokens.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// How many store reads (and phone reads) a batched check runs at once.
pub const READS_IN_FLIGHT: usize = 16;

/// [`observe`] for many tokens: the stores read a few at a time, `debug_token` through Graph
/// batch requests ([`GraphClient::debug_tokens`], `in_flight` batches at a time), the phone
/// reads a few at a time. Answers in the order of `tokens`.
pub async fn observe_many(
    cfg: &Config,
    tokens: &[TokenConfig],
    graph: &GraphClient,
    in_flight: usize,
) -> Vec<Observed> {
    // Entries of file stores come from one read of each file (see `store::file_entries`);
    // other stores are read a few at a time, each opened once.
    let from_files: Vec<Option<Result<Secret, Verdict>>> = crate::store::file_entries(
        tokens.iter().map(|t| (&t.store, t.name.as_str())),
        &cfg.state_dir,
    )
    .await
    .into_iter()
    .map(|r| r.map(|r| r.map_err(store_verdict)))
    .collect();
    let reads = bounded(
        tokens
            .iter()
            .zip(from_files)
            .map(|(t, done)| {
                let (store, name, dir) = (t.store.clone(), t.name.clone(), cfg.state_dir.clone());
                async move {
                    match done {
                        Some(read) => read,
                        None => read_current(&store, &name, &dir).await,
                    }
                }
            })
            .collect(),
    )
    .await;
    // Only kinds `debug_token` inspects go into the batches; the others are probed alone.
    let secrets: Vec<Secret> = reads
        .iter()
        .zip(tokens)
        .filter(|(_, t)| t.kind.debug_token())
        .filter_map(|(r, _)| r.as_ref().ok().cloned())
        .collect();
    let mut infos = graph.debug_tokens(&secrets, in_flight).await.into_iter();
    let app = std::sync::Arc::new(AppCheck::new());
    let jobs = tokens
        .iter()
        .zip(reads)
        .map(|(t, read)| {
            let read = read.map(|token| {
                let info = t
                    .kind
                    .debug_token()
                    .then(|| infos.next().expect("one answer per token read"));
                (token, info)
            });
            let (t, graph, dir) = (t.clone(), graph.clone(), cfg.state_dir.clone());
            let app = app.clone();
            async move {
                match read {
                    Ok((token, info)) => {
                        let info = match info {
                            Some(i) => i,
                            None => inspect(&dir, &t, &graph, &token).await,
                        };
                        let (verdict, facts) = judge(&t, &token, info, &graph).await;
                        let verdict = whose_refusal(verdict, t.kind, &graph, &app).await;
                        Observed {
                            verdict,
                            facts,
                            token: Some(token),
                        }
                    }
                    Err(verdict) => Observed {
                        verdict,
                        facts: None,
                        token: None,
                    },
                }
            }
        })
        .collect();
    bounded(jobs).await
}

/// What checking one token found.
#[derive(Debug)]
pub struct Observed {
    /// The verdict.
    pub verdict: Verdict,
    /// What Graph said about it, when it answered.
    pub facts: Option<TokenFacts>,
    /// The value read from the store.
    pub token: Option<Secret>,
}

/// Runs `futs` at most [`READS_IN_FLIGHT`] at a time; results in input order.
async fn bounded<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let n = futs.len();
    let mut out: Vec<Option<F::Output>> = (0..n).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    let mut queue = futs.into_iter().enumerate();
    loop {
        while set.len() < READS_IN_FLIGHT {
            let Some((i, f)) = queue.next() else { break };
            set.spawn(async move { (i, f.await) });
        }
        match set.join_next().await {
            Some(Ok((i, v))) => out[i] = Some(v),
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            None => break,
        }
    }
    out.into_iter()
        .map(|v| v.expect("every task answered"))
        .collect()
}

/// The token's current value, or the verdict that says why there is none.
pub async fn read_current(
    store: &StoreConfig,
    name: &str,
    state_dir: &Path,
) -> Result<Secret, Verdict> {
    let store = Store::open(store, name, state_dir)
        .await
        .map_err(|e| Verdict::StoreProblem {
            detail: e.to_string(),
        })?;
    store.current().await.map_err(store_verdict)
}

/// The verdict for a store that could not give the token: retry later, or fix the store.
fn store_verdict(e: StoreError) -> Verdict {
    match e {
        e @ StoreError::Unavailable { .. } => Verdict::Unreachable {
            detail: e.to_string(),
        },
        e => Verdict::StoreProblem {
            detail: e.to_string(),
        },
    }
}

/// Turns `debug_token`'s answer into a verdict, reading the phone number when it is valid.
async fn judge(
    t: &TokenConfig,
    token: &Secret,
    info: Result<graph::TokenInfo, GraphError>,
    graph: &GraphClient,
) -> (Verdict, Option<TokenFacts>) {
    let info = match info {
        Ok(i) => i,
        // A rate limit, at once when Meta asks for more than a few seconds
        // (`graph::MAX_RATE_LIMIT_WAIT`): it says nothing about the token, and asking again
        // before access returns burns more quota. The check is deferred (`Daemon::note`).
        Err(GraphError::Transient(Transient::RateLimited { api, retry_after })) => {
            return (
                Verdict::Throttled {
                    retry_after_secs: retry_after.map(|d| d.as_secs()),
                    detail: format!("rate limited: {api}"),
                },
                None,
            );
        }
        // The next scheduled check tries again, and only a failure lasting
        // `cannot_check_after` is emailed.
        Err(GraphError::Transient(e)) => {
            return (
                Verdict::Unreachable {
                    detail: e.to_string(),
                },
                None,
            );
        }
        // The kind's own read refused for another reason than a dead token (a missing
        // permission, a wrong call): the token cannot do its job until a person fixes it.
        Err(GraphError::Misconfigured(api)) if !t.kind.debug_token() => {
            return (
                Verdict::Unusable {
                    reason: format!("{} refused GET /me: {api}", t.kind.host()),
                },
                None,
            );
        }
        // Any refusal of the inspecting call is about tokenwarden's credentials (reference §8).
        Err(e) => {
            return (
                Verdict::OwnCredentials {
                    detail: e.to_string(),
                },
                None,
            );
        }
    };
    let facts = facts_of(token, &info);
    if let Some(api) = info.invalid_reason() {
        // Refused as unparseable because it belongs to another host: a config mistake to
        // name, not a dead token to replace.
        if let Some(other) = wrong_host(t.kind, token, &api) {
            return (
                Verdict::Unusable {
                    reason: t.kind.wrong_host(other),
                },
                Some(facts),
            );
        }
        let expired = api.subcode == Some(463);
        return (
            Verdict::Dead {
                reason: graph::dead_reason(&api),
                expired,
            },
            Some(facts),
        );
    }
    if !t.kind.debug_token() {
        // The kind's `GET /me` answered: that read is the proof.
        return (Verdict::Healthy, Some(facts));
    }
    let (_, usability) = prove(graph, t, token, &info).await;
    let verdict = match usability {
        // An answer without `is_valid` is unknown, not invalid: only a read proves it works.
        Usability::Usable
            if info.validity_unknown()
                && match t.kind {
                    Kind::Whatsapp => t.phone_number_id.is_none(),
                    Kind::Marketing => t.ad_accounts.is_empty(),
                    _ => false,
                } =>
        {
            Verdict::Unreachable {
                detail: "Meta's debug_token answer did not say whether the token is valid, and no phone number is configured to prove it works".into(),
            }
        }
        Usability::Usable => Verdict::Healthy,
        Usability::Unusable(reason) => Verdict::Unusable { reason },
        Usability::Dead(api) => Verdict::Dead {
            reason: graph::dead_reason(&api),
            expired: api.subcode == Some(463),
        },
        Usability::OwnCredentials(detail) => Verdict::OwnCredentials { detail },
        Usability::Unknown(detail) => Verdict::Unreachable { detail },
        Usability::Throttled {
            retry_after,
            detail,
        } => Verdict::Throttled {
            retry_after_secs: retry_after.map(|d| d.as_secs()),
            detail,
        },
    };
    (verdict, Some(facts))
}

/// The kind a token Meta refused with code 190 really belongs to, when its value says it is
/// another kind's (so the token was given to the wrong host).
pub fn wrong_host(kind: Kind, token: &Secret, api: &graph::ApiError) -> Option<Kind> {
    if api.code != 190 {
        return None;
    }
    Kind::of_value(token.expose()).filter(|other| other.host() != kind.host())
}

/// The reads the one usability rule needs for `t` (the WABA when `debug_token` lists no
/// targets, the phone number) and the rule's verdict on them: what the daemon's check,
/// `doctor` and a candidate's validation all ask.
pub async fn prove(
    graph: &GraphClient,
    t: &TokenConfig,
    token: &Secret,
    info: &graph::TokenInfo,
) -> (graph::Proof, Usability) {
    if let Some(page) = t.page.as_ref().filter(|_| t.kind == Kind::Page) {
        let mut proof = graph::Proof::default();
        if info.invalid_reason().is_none() {
            proof.page = Some(graph.read_page(token, &page.id).await);
            if page.messenger && matches!(proof.page, Some(Ok(()))) {
                proof.subscribed = Some(graph.page_subscribed(token, &page.id).await);
            }
        }
        let usability = crate::usable::decide_page(info, &page.id, page.messenger, &proof);
        return (proof, usability);
    }
    if t.kind == Kind::WhatsappBusiness {
        // No WABA id (a group's member without the tag): nothing to read; the rule says so.
        let waba = t.waba_id.as_deref();
        let mut proof = graph::Proof::default();
        if let Some(waba) = waba.filter(|_| info.invalid_reason().is_none()) {
            proof.waba_numbers = Some(graph.waba_phone_numbers(token, waba).await.map(|n| n.len()));
        }
        let usability = crate::usable::decide_business(info, waba, &proof);
        return (proof, usability);
    }
    if t.kind == Kind::Marketing {
        let mut proof = graph::Proof::default();
        if info.invalid_reason().is_none() {
            for id in &t.ad_accounts {
                let read = graph.ad_account_status(token, id).await;
                let failed = read.is_err();
                proof.ad_accounts.push((id.clone(), read));
                if failed {
                    break;
                }
            }
        }
        let usability = crate::usable::decide_marketing(info, &proof);
        return (proof, usability);
    }
    let (waba, phone) = (t.waba_id.as_deref(), t.phone_number_id.as_deref());
    let proof = graph.prove(token, info, waba, phone).await;
    let usability = crate::usable::decide(info, waba, phone, &proof);
    (proof, usability)
}
