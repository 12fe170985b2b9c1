//! The mutable state of a running sandbox: clock, tokens, app secrets, pending faults, counters
//! and sent messages. Everything sits behind one mutex that is never held across an `await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::fault::{Endpoint, Fault};
use super::scenario::{AppDef, Lifetime, Scenario, TokenDef, TokenKind, TokenSpec, TokenStatusDef};
use crate::secret::Fingerprint;

/// Seconds in an hour, a day.
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 86_400;

/// Request counters (`Sandbox::stats`, `GET /_sandbox/state`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Graph requests by endpoint kind; batch items count under their own kind too.
    pub requests: BTreeMap<Endpoint, u64>,
    /// Tokens minted through `/{system-user-id}/access_tokens`.
    pub minted: u64,
    /// Tokens refreshed through `oauth/access_token`.
    pub refreshed: u64,
    /// Tokens revoked through `oauth/revoke`.
    pub revoked: u64,
    /// Messages accepted by `/{phone-number-id}/messages`.
    pub messages_sent: u64,
    /// Batch requests (`POST /` with `batch`).
    pub batch_calls: u64,
    /// The most Graph HTTP requests in progress at once.
    pub peak_in_flight: u64,
}

impl Stats {
    /// Requests seen for one endpoint kind ([`Endpoint::Any`]: all of them).
    pub fn requests_for(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::Any => self.requests.values().sum(),
            e => self.requests.get(&e).copied().unwrap_or(0),
        }
    }
}

/// A message the sandbox accepted (`Sandbox::sent_messages`, `GET /_sandbox/messages`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    /// The `wamid.` id returned to the caller.
    pub id: String,
    /// Sending phone-number id.
    pub phone_number_id: String,
    /// Recipient as given.
    pub to: String,
    /// `text` or `template`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Text body, for text messages.
    pub body: Option<String>,
    /// Template name, for template messages.
    pub template: Option<String>,
    /// Template language code.
    pub language: Option<String>,
    /// Sandbox time of sending.
    pub sent_at: i64,
    /// Fingerprint of the token used (never the token).
    pub token_fingerprint: String,
}

/// Why a token no longer works, beyond expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Invalidated by Meta with this subcode (460, 467, 458, ...).
    Invalidated(u32),
    /// Revoked through `oauth/revoke` (subcode 466).
    Revoked,
}

/// A token the sandbox knows.
#[derive(Clone, Debug)]
pub(crate) struct TokenRec {
    pub value: String,
    pub kind: TokenKind,
    pub app_id: String,
    pub scopes: Vec<String>,
    pub wabas: Vec<String>,
    pub user_id: Option<String>,
    pub issued_at: i64,
    /// 0 = never.
    pub expires_at: i64,
    pub data_access_expires_at: i64,
    pub kill: Option<Kill>,
}

/// What a token is right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Valid,
    Expired,
    Dead(Kill),
}

impl TokenRec {
    pub fn status(&self, now: i64) -> Status {
        match self.kill {
            Some(k) => Status::Dead(k),
            None if self.expires_at != 0 && self.expires_at <= now => Status::Expired,
            None => Status::Valid,
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Rounds a unix time up to the next full hour (Meta's 24-hour and 60-day expiries land there).
pub(crate) fn round_up_hour(t: i64) -> i64 {
    (t + HOUR - 1).div_euclid(HOUR) * HOUR
}

/// A small xorshift generator: token values and trace ids only need to look random.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn seeded(extra: u64) -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut r = Rng((nanos ^ extra.rotate_left(32)) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }

    pub fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn alnum(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len())] as char)
            .collect()
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The whole mutable world.
pub(crate) struct World {
    pub scenario: Scenario,
    /// Current secrets by app id (they change with `reset_app_secret`).
    pub secrets: HashMap<String, String>,
    /// Sandbox time minus real time.
    pub clock_offset: i64,
    pub tokens: HashMap<String, TokenRec>,
    pub faults: Vec<Fault>,
    pub stats: Stats,
    pub messages: Vec<SentMessage>,
    pub rng: Rng,
    /// Calls per sandbox second within the usage window, oldest first, for `X-App-Usage`.
    pub usage: VecDeque<(i64, u64)>,
    /// Graph HTTP requests in progress.
    pub in_flight: u64,
    /// Requests in progress at each arrival (see `Sandbox::concurrency_log`).
    pub arrivals: Vec<u32>,
    /// Whether the demo Page is subscribed to the first app (Messenger delivers its messages).
    pub page_subscribed: bool,
    /// A Messenger policy refusal the demo Page's own token meets on its reads, if any.
    pub page_policy: Option<MessengerPolicy>,
    /// Whether the people of the sandbox lost their role on the demo Page.
    pub page_role_lost: bool,
    /// Ad accounts (digits, without `act_`) and their `account_status`.
    pub ad_accounts: HashMap<String, i64>,
    /// Per client business (Embedded Signup customers): the business integration
    /// system-user token `system_user_access_tokens` with `fetch_only` hands back.
    pub business_tokens: HashMap<String, String>,
}

/// A Messenger Platform policy refusal (its "Common Error Codes" and the Send API's error
/// codes): about what the Page may do, never about its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessengerPolicy {
    /// Code 10, subcode 2018278: "This message is sent outside of allowed window" (the
    /// 24-hour standard messaging window closed).
    OutsideWindow,
    /// Code 230: "Requires pages_messaging permission to manage the object".
    NoMessagingPermission,
}

/// How many arrivals `World::arrivals` keeps: a long-running sandbox must not grow forever.
const ARRIVALS_KEPT: usize = 100_000;

impl World {
    pub fn new(scenario: Scenario) -> World {
        let clock_offset = scenario.now.map(|t| t - real_now()).unwrap_or(0);
        let secrets = scenario
            .apps
            .iter()
            .map(|a| (a.id.clone(), a.secret.clone()))
            .collect();
        let mut w = World {
            secrets,
            clock_offset,
            tokens: HashMap::new(),
            faults: scenario.faults.clone(),
            stats: Stats::default(),
            messages: Vec::new(),
            rng: Rng::seeded(0x5eed),
            usage: VecDeque::new(),
            in_flight: 0,
            arrivals: Vec::new(),
            page_subscribed: true,
            page_policy: None,
            page_role_lost: false,
            ad_accounts: HashMap::from([(
                crate::sandbox::scenario::DEMO_AD_ACCOUNT_ID.to_string(),
                1,
            )]),
            business_tokens: HashMap::new(),
            scenario,
        };
        for def in w.scenario.tokens.clone() {
            w.insert_def(&def);
        }
        w
    }

    pub fn now(&self) -> i64 {
        real_now() + self.clock_offset
    }

    pub fn app(&self, id: &str) -> Option<&AppDef> {
        self.scenario.apps.iter().find(|a| a.id == id)
    }

    pub fn default_app_id(&self) -> String {
        self.scenario
            .apps
            .first()
            .map(|a| a.id.clone())
            .unwrap_or_default()
    }

    pub fn secret_of(&self, app_id: &str) -> Option<&str> {
        self.secrets.get(app_id).map(String::as_str)
    }

    /// A fresh value shaped like a real token: about 180 alphanumerics after the prefix Meta
    /// gives `kind`'s tokens: `IGAA` for Instagram Login, `THAA` for Threads, `EAA` for
    /// everything Graph issues ([field]).
    pub fn new_value_for(&mut self, kind: TokenKind) -> String {
        let prefix = match kind {
            TokenKind::Instagram => "IGAA",
            TokenKind::Threads => "THAA",
            _ => "EAA",
        };
        loop {
            let len = 170 + self.rng.below(25);
            let v = format!("{prefix}{}", self.rng.alnum(len));
            if !self.tokens.contains_key(&v) {
                return v;
            }
        }
    }

    /// Builds a record for `spec` issued at `now - issued_ago` (no value yet).
    fn record(&self, spec: &TokenSpec, value: String) -> TokenRec {
        let now = self.now();
        let issued_at = now - spec.issued_ago_secs;
        let expires_at = match spec.lifetime {
            Lifetime::Never => 0,
            Lifetime::Days60 => round_up_hour(issued_at + 60 * DAY),
            Lifetime::Hours24 => round_up_hour(issued_at + 24 * HOUR),
            Lifetime::AfterSecs(s) => issued_at + s,
            Lifetime::ExpiresIn(s) => now + s,
        };
        let user_id = spec.user_id.clone();
        TokenRec {
            value,
            kind: spec.kind,
            app_id: spec.app_id.clone().unwrap_or_else(|| self.default_app_id()),
            scopes: spec.scopes.clone(),
            wabas: spec.wabas.clone(),
            user_id,
            issued_at,
            expires_at,
            data_access_expires_at: data_access_for(spec.kind, issued_at),
            kill: None,
        }
    }

    /// Creates a token of `spec` and returns its value. App "tokens" are `APP_ID|SECRET`.
    pub fn issue(&mut self, spec: &TokenSpec) -> String {
        if spec.kind == TokenKind::App {
            let app = spec.app_id.clone().unwrap_or_else(|| self.default_app_id());
            let secret = self.secret_of(&app).unwrap_or_default();
            return format!("{app}|{secret}");
        }
        let value = self.new_value_for(spec.kind);
        let rec = self.record(spec, value.clone());
        self.tokens.insert(value.clone(), rec);
        value
    }

    /// Inserts a copy of `rec` with a new value, issued now, 60 days on the hour.
    pub fn reissue_60d(&mut self, rec: &TokenRec) -> TokenRec {
        let now = self.now();
        let value = self.new_value_for(rec.kind);
        let new = TokenRec {
            value: value.clone(),
            issued_at: now,
            expires_at: round_up_hour(now + 60 * DAY),
            data_access_expires_at: data_access_for(rec.kind, now),
            kill: None,
            ..rec.clone()
        };
        self.tokens.insert(value, new.clone());
        new
    }

    fn insert_def(&mut self, def: &TokenDef) {
        let mut rec = self.record(&def.spec(), def.value.clone());
        let now = self.now();
        if let Some(t) = def.issued_at {
            rec.issued_at = t;
            rec.data_access_expires_at = data_access_for(rec.kind, t);
        }
        if let Some(t) = def.expires_at {
            rec.expires_at = t;
        }
        match def.status {
            TokenStatusDef::Valid => {}
            TokenStatusDef::Expired => {
                if rec.expires_at == 0 || rec.expires_at > now {
                    // Expired an hour ago, on the hour, after a 60-day life.
                    rec.expires_at = round_up_hour(now - 2 * HOUR);
                    if def.issued_at.is_none() {
                        rec.issued_at = rec.expires_at - 60 * DAY;
                        rec.data_access_expires_at = data_access_for(rec.kind, rec.issued_at);
                    }
                }
            }
            TokenStatusDef::Invalidated => {
                rec.kill = Some(Kill::Invalidated(def.subcode.unwrap_or(460)))
            }
            TokenStatusDef::Revoked => rec.kill = Some(Kill::Revoked),
        }
        self.tokens.insert(rec.value.clone(), rec);
    }

    /// Takes one use of the first pending fault matching `endpoint`.
    pub fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let i = self.faults.iter().position(|f| {
            let e = f.endpoint();
            e == Endpoint::Any || e == endpoint
        })?;
        let fault = self.faults[i].clone();
        match fault.count() {
            0 => {}
            1 => {
                self.faults.remove(i);
            }
            n => self.faults[i] = fault.clone().times(n - 1),
        }
        Some(fault)
    }

    /// Counts a call (a request, or an item of a batch) for the stats and the usage window.
    pub fn count(&mut self, endpoint: Endpoint) {
        *self.stats.requests.entry(endpoint).or_insert(0) += 1;
        let now = self.now();
        match self.usage.back_mut() {
            Some((sec, n)) if *sec == now => *n += 1,
            _ => self.usage.push_back((now, 1)),
        }
        self.forget_old_usage(now);
    }

    fn forget_old_usage(&mut self, now: i64) {
        let window = self.scenario.usage.window_secs.max(1);
        while self
            .usage
            .front()
            .is_some_and(|(sec, _)| *sec <= now - window)
        {
            self.usage.pop_front();
        }
    }

    /// `X-App-Usage`'s `call_count`: the calls within the window, in percent of the limit.
    pub fn usage_percent(&mut self) -> u64 {
        let now = self.now();
        self.forget_old_usage(now);
        // Calls "from the future" (the clock was moved back) still count until they age out.
        let calls: u64 = self.usage.iter().map(|(_, n)| n).sum();
        calls.saturating_mul(100) / self.scenario.usage.call_limit.max(1)
    }

    /// A Graph HTTP request starts: counted in flight and logged.
    pub fn arrive(&mut self) {
        self.in_flight += 1;
        self.stats.peak_in_flight = self.stats.peak_in_flight.max(self.in_flight);
        if self.arrivals.len() < ARRIVALS_KEPT {
            self.arrivals
                .push(u32::try_from(self.in_flight).unwrap_or(u32::MAX));
        }
    }

    /// A Graph HTTP request has its answer.
    pub fn depart(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Moves the clock by `secs` (negative moves it back).
    pub fn advance(&mut self, secs: i64) {
        self.clock_offset += secs;
    }

    /// Sets the clock to `unix`; it keeps ticking from there.
    pub fn set_now(&mut self, unix: i64) {
        self.clock_offset = unix - real_now();
    }

    /// Kills a token with `subcode` (466 counts as a revocation); false if unknown.
    pub fn invalidate(&mut self, token: &str, subcode: u32) -> bool {
        match self.tokens.get_mut(token) {
            Some(rec) => {
                rec.kill = Some(if subcode == 466 {
                    Kill::Revoked
                } else {
                    Kill::Invalidated(subcode)
                });
                true
            }
            None => false,
        }
    }

    /// Resets an app's secret (`None`: the first app); false if the app is unknown.
    /// App tokens and proofs made with the old secret stop working at once, as at Meta.
    pub fn reset_secret(&mut self, app_id: Option<&str>, secret: &str) -> bool {
        let id = app_id
            .map(str::to_string)
            .unwrap_or_else(|| self.default_app_id());
        if self.app(&id).is_none() {
            return false;
        }
        self.secrets.insert(id, secret.to_string());
        true
    }

    /// State for `GET /_sandbox/state`: fingerprints, never token values or secrets.
    pub fn snapshot(&self) -> serde_json::Value {
        let now = self.now();
        let mut tokens: Vec<_> = self
            .tokens
            .values()
            .map(|t| {
                let (status, subcode) = match t.status(now) {
                    Status::Valid => ("valid", None),
                    Status::Expired => ("expired", Some(463)),
                    Status::Dead(Kill::Revoked) => ("revoked", Some(466)),
                    Status::Dead(Kill::Invalidated(s)) => ("invalidated", Some(s)),
                };
                serde_json::json!({
                    "fingerprint": Fingerprint::of(&t.value).to_string(),
                    "type": t.kind.as_str(),
                    "app_id": t.app_id,
                    "user_id": t.user_id,
                    "scopes": t.scopes,
                    "wabas": t.wabas,
                    "issued_at": t.issued_at,
                    "expires_at": t.expires_at,
                    "status": status,
                    "subcode": subcode,
                })
            })
            .collect();
        tokens.sort_by_key(|t| (t["issued_at"].as_i64(), t["fingerprint"].to_string()));
        let apps: Vec<_> = self
            .scenario
            .apps
            .iter()
            .map(|a| {
                serde_json::json!({
                    "id": a.id,
                    "name": a.name,
                    "require_app_secret": a.require_app_secret,
                    "secret_fingerprint": Fingerprint::of(self.secret_of(&a.id).unwrap_or_default()).to_string(),
                })
            })
            .collect();
        serde_json::json!({
            "now": now,
            "clock_offset": self.clock_offset,
            "apps": apps,
            "tokens": tokens,
            "faults": self.faults,
            "stats": self.stats,
            "messages_sent": self.messages.len(),
        })
    }
}

fn data_access_for(kind: TokenKind, issued_at: i64) -> i64 {
    match kind {
        // Data access lapses 90 days after issue for people and pages, never for system users.
        TokenKind::User | TokenKind::Page => issued_at + 90 * DAY,
        TokenKind::SystemUser | TokenKind::App | TokenKind::Instagram | TokenKind::Threads => 0,
    }
}

/// A unix time as Meta's 190/463 messages quote it: `Saturday, 29-Jun-24 09:00:00 PDT`.
pub(crate) fn pacific(ts: i64) -> String {
    let tz = jiff::tz::TimeZone::get("America/Los_Angeles")
        .or_else(|_| jiff::tz::TimeZone::posix("PST8PDT,M3.2.0,M11.1.0"))
        .unwrap_or(jiff::tz::TimeZone::UTC);
    match jiff::Timestamp::from_second(ts) {
        Ok(t) => t
            .to_zoned_datetime(tz)
            .strftime("%A, %d-%b-%y %H:%M:%S %Z")
            .to_string(),
        Err(_) => format!("unix time {ts}"),
    }
}

/// The shared world handle.
pub(crate) type Shared = std::sync::Arc<Mutex<World>>;

/// Locks the world, recovering from a poisoned lock: a panicked handler must not take the
/// whole sandbox down with it.
pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, World> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacific_matches_metas_wording() {
        // 2024-06-29 16:00:00 UTC = 09:00 PDT.
        assert_eq!(pacific(1_719_676_800), "Saturday, 29-Jun-24 09:00:00 PDT");
        // 2024-01-15 20:30:00 UTC = 12:30 PST.
        assert_eq!(pacific(1_705_350_600), "Monday, 15-Jan-24 12:30:00 PST");
    }

    #[test]
    fn expiry_rounds_up_to_the_hour() {
        assert_eq!(round_up_hour(7200), 7200);
        assert_eq!(round_up_hour(7201), 10800);
    }

    #[test]
    fn faults_count_down_and_zero_means_forever() {
        let mut w = World::new(Scenario::demo());
        w.faults.push(Fault::html(Endpoint::Messages).times(2));
        w.faults.push(Fault::empty(Endpoint::Phone).times(0));
        assert!(w.take_fault(Endpoint::DebugToken).is_none());
        assert!(w.take_fault(Endpoint::Messages).is_some());
        assert!(w.take_fault(Endpoint::Messages).is_some());
        assert!(w.take_fault(Endpoint::Messages).is_none());
        for _ in 0..5 {
            assert!(w.take_fault(Endpoint::Phone).is_some());
        }
    }
}
