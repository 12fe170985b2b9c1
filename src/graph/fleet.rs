//! Checking many tokens at once: `debug_token` through Graph batch requests (reference
//! section 6), a bounded number of batches in flight, slowed by [`Throttle`] as Meta's usage
//! headers approach their limits.
//!
//! One batch is `POST /{version}/` with the form fields `batch` (a JSON array of
//! `{"method":"GET","relative_url":"debug_token?input_token=..."}`), `include_headers=false`,
//! and the app token as `access_token` with its `appsecret_proof`: Meta's "Batch requests"
//! page says "You must include an access token as a top level parameter", and "Login
//! security" sends both as form fields, so no `Authorization` header is relied on. The
//! tokens, the app token included, travel in the form body, never in the URL. Meta answers in order with
//! `[{"code":200,"body":"<JSON as a string>"}, ...]` and counts each item against its rate
//! limits separately, so every item is judged on its own:
//!
//! - a 2xx item's body is `debug_token`'s answer, read exactly as [`GraphClient::debug_token`]
//!   reads it;
//! - an error item is classified with `classify(CallKind::Inspect, ...)`, as a single call's
//!   error would be;
//! - a transient item (a rate limit, a temporary error, a `null` Meta did not get to, a body
//!   that does not parse) goes into a later batch after a backoff, without touching the other
//!   items; like a single call it has `attempts` tries in all, and a rate limit asking for
//!   more than [`MAX_RATE_LIMIT_WAIT`] (a few seconds) ends it as rate limited at once;
//! - a batch that fails as a whole (connection, timeout, 5xx, an HTML page) is sent again by
//!   the client's usual retry policy; if it still fails, each of its tokens gets that error;
//! - a rate limit while `X-App-Usage` says the app's quota is spent (Meta's hourly quota has
//!   no `Retry-After`, and each item counts against it), or a whole batch refused with a
//!   rate limit longer than a call waits, stops the pass: no further batch is sent, nothing
//!   is sent again, and every token not answered yet gets that rate limit, to be checked when
//!   access returns. Sending the rest would only be refused and spend more of the quota.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::error::{self, CallKind, GraphError, Transient, classify};
use super::throttle::{Throttle, usage_percent};
use super::{
    GraphClient, MAX_RATE_LIMIT_WAIT, Replay, TokenInfo, backoff, retry_after, token_info, wire,
};
use crate::secret::{Secret, appsecret_proof};

/// The most requests Meta takes in one batch.
pub const BATCH_SIZE: usize = 50;

/// What became of one item of a batch. Short-lived (one batch's worth), so not boxed.
#[allow(clippy::large_enum_variant)]
enum Item {
    /// Final: a verdict, or an error that another try would not change.
    Done(Result<TokenInfo, GraphError>),
    /// Transient: worth another try in a later batch.
    Again(GraphError),
}

/// A batch's items in order, and the usage its headers reported.
struct Answer {
    items: Vec<Item>,
    usage: Option<u32>,
}

/// One pass of [`GraphClient::debug_tokens_with`]: every token is fresh (never sent), ready
/// (its wait is over), waiting (after a transient failure), in a running batch, or answered.
struct Pass<'a> {
    graph: &'a GraphClient,
    /// The client the batch tasks share.
    shared: Arc<GraphClient>,
    tokens: &'a [Secret],
    app_token: Secret,
    proof: String,
    throttle: Throttle,
    results: Vec<Option<Result<TokenInfo, GraphError>>>,
    tries: Vec<u32>,
    fresh: std::ops::Range<usize>,
    /// Items whose wait is over, and groups still waiting (one per batch answer).
    ready: VecDeque<usize>,
    waiting: Vec<(Instant, Vec<usize>)>,
    running: HashMap<tokio::task::Id, Vec<usize>>,
    set: JoinSet<Result<Answer, GraphError>>,
    /// When the throttle lets the next batch start.
    next_start: Instant,
    /// The rate limit that stopped the pass, once one did.
    halted: Option<GraphError>,
}

impl<'a> Pass<'a> {
    fn new(graph: &'a GraphClient, tokens: &'a [Secret], throttle: Throttle) -> Pass<'a> {
        let n = tokens.len();
        let app_token = graph.app_token();
        let proof = appsecret_proof(&graph.app.app_secret, app_token.expose());
        Pass {
            graph,
            shared: Arc::new(graph.clone()),
            tokens,
            app_token,
            proof,
            throttle,
            results: vec![None; n],
            tries: vec![0u32; n],
            fresh: 0..n,
            ready: VecDeque::new(),
            waiting: Vec::new(),
            running: HashMap::new(),
            set: JoinSet::new(),
            next_start: Instant::now(),
            halted: None,
        }
    }

    /// After a halt nothing more is sent: what is not answered yet keeps the rate limit.
    fn fail_unanswered(&mut self) {
        let Some(e) = &self.halted else {
            return;
        };
        for i in self.fresh.by_ref().chain(self.ready.drain(..)) {
            self.results[i] = Some(Err(e.clone()));
        }
        for (_, group) in self.waiting.drain(..) {
            for i in group {
                self.results[i] = Some(Err(e.clone()));
            }
        }
    }

    /// Starts batches while the throttle allows and work is ready.
    fn start_batches(&mut self) {
        while self.set.len() < self.throttle.in_flight() && Instant::now() >= self.next_start {
            let now = Instant::now();
            let ready = &mut self.ready;
            self.waiting.retain(|(at, group)| {
                if *at <= now {
                    ready.extend(group.iter().copied());
                    false
                } else {
                    true
                }
            });
            let mut batch = Vec::with_capacity(BATCH_SIZE);
            while batch.len() < BATCH_SIZE {
                match self.ready.pop_front().or_else(|| self.fresh.next()) {
                    Some(i) => batch.push(i),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            for &i in &batch {
                self.tries[i] += 1;
            }
            let body = batch_body(self.tokens, &batch, &self.app_token, &self.proof);
            let client = self.shared.clone();
            let expected = batch.len();
            let handle = self
                .set
                .spawn(async move { client.send_batch(&body, expected).await });
            self.running.insert(handle.id(), batch);
            self.next_start = now + self.throttle.pause();
        }
    }

    /// When to look again if no batch finishes first: when the pause ends (work ready) or the
    /// first waiting group may go; only while there is room for another batch.
    fn wake(&self, has_ready: bool) -> Option<Instant> {
        if self.set.len() < self.throttle.in_flight() {
            let first_wait = self.waiting.iter().map(|(at, _)| *at).min();
            if has_ready {
                Some(self.next_start)
            } else {
                first_wait.map(|at| at.max(self.next_start))
            }
        } else {
            None
        }
    }

    /// Takes in a finished batch: its items settled, or its error given to each of its tokens;
    /// a rate limit that says the app's quota is spent halts the pass.
    fn answered(
        &mut self,
        joined: Result<(tokio::task::Id, Result<Answer, GraphError>), tokio::task::JoinError>,
    ) {
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => (
                e.id(),
                Err(GraphError::Transient(Transient::Network(
                    "a batch of token checks stopped before it finished".into(),
                ))),
            ),
        };
        let batch = self.running.remove(&id).unwrap_or_default();
        match outcome {
            Ok(answer) => {
                if let Some(u) = answer.usage {
                    self.throttle.observe(u);
                }
                let limited = self.graph.settle(
                    &batch,
                    answer.items,
                    &self.tries,
                    &mut self.results,
                    &mut self.waiting,
                );
                // Refused while the headers say the app's quota is spent: the rest of the
                // pass would be refused too.
                if let Some(e) = limited
                    && answer.usage.is_some_and(|u| u >= 100)
                {
                    self.halted.get_or_insert(e);
                }
            }
            Err(e) => {
                if let GraphError::Transient(Transient::RateLimited { retry_after, .. }) = &e {
                    self.throttle.observe(100);
                    // The whole batch refused, for longer than a call waits (or without a
                    // word on how long): the app's limit.
                    if retry_after.is_none_or(|w| w > MAX_RATE_LIMIT_WAIT) {
                        self.halted.get_or_insert(e.clone());
                    }
                }
                for &i in &batch {
                    self.results[i] = Some(Err(e.clone()));
                }
            }
        }
        tracing::trace!(
            in_flight = self.throttle.in_flight(),
            pause_ms = self.throttle.pause().as_millis() as u64,
            "batch answered"
        );
    }

    /// The answers in the order of the tokens.
    fn results(self) -> Vec<Result<TokenInfo, GraphError>> {
        self.results
            .into_iter()
            .map(|r| {
                // Every index is settled above; a gap would be a bug, and still not a verdict.
                r.unwrap_or(Err(GraphError::Transient(Transient::BadBody {
                    status: 0,
                    what: "no answer for this token",
                })))
            })
            .collect()
    }
}

impl GraphClient {
    /// Inspects every token with `debug_token` through batch requests of [`BATCH_SIZE`], with at
    /// most `in_flight` batches at a time (at least 1), slowed down when Meta's usage headers
    /// pass 80 % (see [`Throttle`]). The answers come back in the order of `tokens`, each
    /// what [`GraphClient::debug_token`] would have returned for that token.
    ///
    /// Takes about `ceil(n / 50 / in_flight)` round trips. Must run inside a tokio runtime.
    pub async fn debug_tokens(
        &self,
        tokens: &[Secret],
        in_flight: usize,
    ) -> Vec<Result<TokenInfo, GraphError>> {
        self.debug_tokens_with(tokens, Throttle::new(in_flight))
            .await
    }

    /// [`GraphClient::debug_tokens`] with a throttle of one's own (its pause at 100 % usage,
    /// for example); `throttle.max_in_flight()` bounds the batches in flight.
    pub async fn debug_tokens_with(
        &self,
        tokens: &[Secret],
        throttle: Throttle,
    ) -> Vec<Result<TokenInfo, GraphError>> {
        let mut pass = Pass::new(self, tokens, throttle);
        loop {
            pass.fail_unanswered();
            pass.start_batches();
            let has_ready = !pass.ready.is_empty() || !pass.fresh.is_empty();
            if pass.set.is_empty() && !has_ready && pass.waiting.is_empty() {
                break;
            }
            let wake = pass.wake(has_ready);
            let next_start = pass.next_start;
            tokio::select! {
                Some(joined) = pass.set.join_next_with_id(), if !pass.set.is_empty() => {
                    pass.answered(joined);
                }
                _ = tokio::time::sleep_until(wake.unwrap_or(next_start)), if wake.is_some() => {}
            }
        }
        pass.results()
    }

    /// Records the final items of one answer and queues the others for another batch, all
    /// after one wait (so they travel together). Returns a rate limit among the items, if
    /// any: with the usage headers at 100 % it stops the pass.
    fn settle(
        &self,
        batch: &[usize],
        items: Vec<Item>,
        tries: &[u32],
        results: &mut [Option<Result<TokenInfo, GraphError>>],
        waiting: &mut Vec<(Instant, Vec<usize>)>,
    ) -> Option<GraphError> {
        let mut again = Vec::new();
        let mut wait = Duration::ZERO;
        let mut halt = None;
        for (&i, item) in batch.iter().zip(items) {
            match item {
                Item::Done(r) => results[i] = Some(r),
                Item::Again(e) => {
                    let asked = match &e {
                        GraphError::Transient(Transient::RateLimited { retry_after, .. }) => {
                            *retry_after
                        }
                        _ => None,
                    };
                    if matches!(e, GraphError::Transient(Transient::RateLimited { .. })) {
                        halt.get_or_insert(e.clone());
                    }
                    let too_long = asked.is_some_and(|w| w > MAX_RATE_LIMIT_WAIT);
                    if tries[i] >= self.retry.attempts || too_long {
                        results[i] = Some(Err(e));
                    } else {
                        wait = wait
                            .max(backoff(self.retry.base_delay, tries[i]))
                            .max(asked.unwrap_or_default());
                        again.push(i);
                    }
                }
            }
        }
        if !again.is_empty() {
            tracing::debug!(
                items = again.len(),
                delay_ms = wait.as_millis() as u64,
                "transient failures inside a batch, sending those items again"
            );
            waiting.push((Instant::now() + wait, again));
        }
        halt
    }

    /// Sends one batch (retried as a whole by the usual policy) and reads its items.
    async fn send_batch(&self, body: &Secret, expected: usize) -> Result<Answer, GraphError> {
        // `/{version}/`: the batch endpoint is the version root.
        let url = self.url(&[""]);
        self.send_parsed(
            CallKind::Inspect,
            Replay::Always,
            || {
                self.http
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body.expose().to_owned())
            },
            |status, headers, bytes| {
                let items: Vec<Option<wire::BatchItem>> = serde_json::from_slice(bytes)
                    .map_err(|_| GraphError::Transient(error::bad_body(status, bytes)))?;
                let mut items = items.into_iter();
                Ok(Answer {
                    // A shorter answer leaves the rest unanswered: tried again like a `null`.
                    items: (0..expected)
                        .map(|_| item(items.next().flatten()))
                        .collect(),
                    usage: usage_percent(headers),
                })
            },
        )
        .await
    }
}

/// The form body of one batch: `batch`, `include_headers=false`, the app token as
/// `access_token` and its `appsecret_proof`.
///
/// Written directly rather than through `serde_json` and `url`'s serializer: this is the one
/// piece of a pass that runs on the scheduling task for every token (a tenth of a 10,000-token
/// pass's CPU went here with the generic route). A percent-encoded token is plain ASCII
/// without quotes or backslashes, so it needs no JSON escaping.
fn batch_body(tokens: &[Secret], batch: &[usize], app_token: &Secret, proof: &str) -> Secret {
    const ITEM: &str = r#"{"method":"GET","relative_url":"debug_token?input_token="#;
    // Room for everything up front: a buffer that grows leaves unzeroed copies behind.
    let room = 2 + batch
        .iter()
        .map(|&i| ITEM.len() + 3 + 3 * tokens[i].expose().len())
        .sum::<usize>();
    let mut json = zeroize::Zeroizing::new(String::with_capacity(room));
    json.push('[');
    for (n, &i) in batch.iter().enumerate() {
        if n > 0 {
            json.push(',');
        }
        json.push_str(ITEM);
        form_encode(&mut json, tokens[i].expose());
        json.push_str("\"}");
    }
    json.push(']');
    let room = 3 * json.len() + 96 + 3 * (proof.len() + app_token.expose().len());
    let mut body = String::with_capacity(room);
    body.push_str("batch=");
    form_encode(&mut body, &json);
    body.push_str("&include_headers=false&access_token=");
    form_encode(&mut body, app_token.expose());
    body.push_str("&appsecret_proof=");
    form_encode(&mut body, proof);
    Secret::new(body)
}

/// Appends `value` encoded as `application/x-www-form-urlencoded` does it (the same bytes as
/// `url::form_urlencoded::byte_serialize`): ASCII letters, digits and `*-._` as they are, a
/// space as `+`, every other byte as `%XX`.
fn form_encode(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = value.as_bytes();
    // Runs of bytes that stay as they are are copied at once. A run is all ASCII, so a
    // non-empty one starts and ends on character boundaries.
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_') {
            continue;
        }
        if plain < i {
            out.push_str(&value[plain..i]);
        }
        plain = i + 1;
        if b == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    if plain < bytes.len() {
        out.push_str(&value[plain..]);
    }
}

/// Judges one item of a batch answer.
fn item(raw: Option<wire::BatchItem>) -> Item {
    let Some(raw) = raw else {
        return Item::Again(GraphError::Transient(Transient::BadBody {
            status: 200,
            what: "no answer for this item of the batch (null)",
        }));
    };
    let status = raw
        .code
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or_default();
    let body = raw.body.unwrap_or_default();
    if (200..300).contains(&status) {
        return match serde_json::from_str::<wire::DebugTokenResponse>(&body) {
            Ok(parsed) => Item::Done(Ok(token_info(parsed.data))),
            Err(_) => Item::Again(GraphError::Transient(error::bad_body(
                status,
                body.as_bytes(),
            ))),
        };
    }
    let mut headers = HeaderMap::new();
    for h in raw.headers.unwrap_or_default() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) {
            headers.append(name, value);
        }
    }
    match classify(
        CallKind::Inspect,
        status,
        body.as_bytes(),
        retry_after(&headers),
    ) {
        e @ GraphError::Transient(_) => Item::Again(e),
        e => Item::Done(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(code: i64, body: &str) -> Option<wire::BatchItem> {
        Some(wire::BatchItem {
            code: Some(code),
            headers: None,
            body: Some(body.into()),
        })
    }

    fn kind(i: &Item) -> String {
        match i {
            Item::Done(Ok(info)) => format!("valid={}", info.valid()),
            Item::Done(Err(GraphError::OwnCredentials(a))) => format!("own {}", a.code),
            Item::Done(Err(e)) => format!("done {e}"),
            Item::Again(GraphError::Transient(Transient::RateLimited { api, .. })) => {
                format!("again rate {}", api.code)
            }
            Item::Again(e) => format!("again {e}"),
        }
    }

    #[test]
    fn items_are_judged_one_by_one() {
        let rows: &[(Option<wire::BatchItem>, &str)] = &[
            (
                raw(200, r#"{"data":{"is_valid":true,"scopes":[]}}"#),
                "valid=true",
            ),
            (
                raw(
                    200,
                    r#"{"data":{"is_valid":false,"scopes":[],"error":{"code":190,"message":"x"}}}"#,
                ),
                "valid=false",
            ),
            (
                raw(
                    400,
                    r#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4,"is_transient":true}}"#,
                ),
                "again rate 4",
            ),
            (
                raw(
                    400,
                    r#"{"error":{"message":"(#80004) too many calls","type":"OAuthException","code":80004}}"#,
                ),
                "again rate 80004",
            ),
            (
                raw(
                    429,
                    r#"{"error":{"message":"slow down","type":"OAuthException","code":99}}"#,
                ),
                "again rate 99",
            ),
            (
                raw(
                    400,
                    r#"{"error":{"message":"(#100) The App_id in the input_token did not match the Viewing App","type":"OAuthException","code":100}}"#,
                ),
                "own 100",
            ),
            (
                raw(
                    500,
                    r#"{"error":{"message":"An unexpected error","type":"OAuthException","code":2,"is_transient":true}}"#,
                ),
                "again Graph is unavailable: code 2 (HTTP 500): An unexpected error",
            ),
            (
                raw(200, r#"{"data":"#),
                "again Graph is unavailable: HTTP 200 with a truncated or invalid JSON body instead of Graph JSON",
            ),
            (
                None,
                "again Graph is unavailable: HTTP 200 with no answer for this item of the batch (null) instead of Graph JSON",
            ),
        ];
        for (r, want) in rows {
            let got = item(r.as_ref().map(|r| wire::BatchItem {
                code: r.code,
                headers: None,
                body: r.body.clone(),
            }));
            assert_eq!(kind(&got), *want);
        }
    }

    #[test]
    fn an_items_retry_after_is_read_from_its_headers() {
        let got = item(Some(wire::BatchItem {
            code: Some(400),
            headers: Some(vec![wire::BatchHeader {
                name: "Retry-After".into(),
                value: "7".into(),
            }]),
            body: Some(
                r#"{"error":{"message":"(#17) User request limit reached","type":"OAuthException","code":17}}"#
                    .into(),
            ),
        }));
        match got {
            Item::Again(GraphError::Transient(Transient::RateLimited { retry_after, .. })) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)))
            }
            other => panic!("{}", kind(&other)),
        }
    }

    #[test]
    fn form_encoding_matches_the_url_crate() {
        for v in [
            "",
            "EAAabcXYZ019",
            "123|s e&c=r+t",
            "*-._~!'()/?#[]@:;,$\"\\{}%",
            "caf\u{e9} \u{1f600}\t\n",
            "\u{e9}\u{e9}",
            "a\u{e9}b",
            "\u{1f600}\u{1f600}x",
            "x\u{1f600}",
        ] {
            let mut mine = String::new();
            form_encode(&mut mine, v);
            let theirs: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            assert_eq!(mine, theirs, "{v:?}");
        }
        for b in 0u8..128 {
            let v = (b as char).to_string();
            let mut mine = String::new();
            form_encode(&mut mine, &v);
            let theirs: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            assert_eq!(mine, theirs, "byte {b}");
        }
    }

    #[test]
    fn the_body_carries_tokens_form_encoded_and_never_more_than_asked() {
        let tokens = [
            Secret::new("EAAone"),
            Secret::new("123|s e&c=r+t"),
            Secret::new("EAAthree"),
        ];
        let body = batch_body(&tokens, &[2, 1], &Secret::new("42|app secret"), "proof");
        let pairs: HashMap<String, String> = url::form_urlencoded::parse(body.expose().as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs["include_headers"], "false");
        assert_eq!(pairs["appsecret_proof"], "proof");
        // Meta's batch page: the token as a top-level parameter (issue 13, point 4).
        assert_eq!(pairs["access_token"], "42|app secret");
        let batch: Vec<serde_json::Value> = serde_json::from_str(&pairs["batch"]).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0]["method"], "GET");
        assert_eq!(batch[0]["relative_url"], "debug_token?input_token=EAAthree");
        let url = batch[1]["relative_url"].as_str().unwrap();
        let (_, query) = url.split_once('?').unwrap();
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            decoded,
            vec![("input_token".to_string(), "123|s e&c=r+t".to_string())]
        );
    }
}
