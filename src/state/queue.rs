//! A persistent delivery queue: at-least-once, in practice exactly-once, delivery of what
//! on-call must receive (emails in `outbox/`, each receiver's alerts in `channels/<name>/`).
//!
//! Layout under the queue's directory (mode 0700):
//! - `<id>.json` (0600, written atomically): one [`Entry`], the item plus its delivery
//!   bookkeeping, a record of a [`RecordStore`] (like the flush lock, on the directory). It
//!   exists from [`Queue::enqueue`] until the receiver accepted the item.
//! - `sent/<id>`: a marker written right after the receiver accepted it and before the entry
//!   is removed, kept for [`SENT_RETENTION`]. It makes a second enqueue of a delivered id a
//!   no-op (a daemon that crashed before recording that it asked for the item asks again) and
//!   lets a flush interrupted between the marker and the removal finish without sending twice.
//! - `rejected/<id>.json`: an entry the receiver refused as malformed ([`Plan::SetAside`]):
//!   sending it again cannot help, so it is kept for a person and no longer retried.
//!
//! The only window for a duplicate is a crash between the receiver's acceptance and the marker
//! write.
//!
//! An entry that may yet go through is never given up on: no limit on attempts or age. A
//! warning that arrives a day late still tells on-call what to do, and a queue that silently
//! emptied itself would hide the outage. The backoff is capped ([`BACKOFF_CAP`]) so that once
//! the receiver is back every waiting item goes out within one cap, however long the outage
//! was; [`Queue::backlog`] shows the queue meanwhile.

use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Layout, RecordLock, RecordStore, StateError};
use crate::fsutil::write_atomic;

/// First retry delay after a transient failure; doubles with each attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest delay between attempts, and the delay after a refusal that a person must fix: the
/// most a returned receiver waits for the queue to try again.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// How long a delivered id is remembered, so enqueueing it again sends nothing.
pub const SENT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// What a queue holds: an item with a stable id (its file name) about one token.
pub trait Queued: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// How logs name one item (`email`, `alert`).
    const NOUN: &'static str;
    /// The item's id: `[a-z0-9-]{1,128}`, the same for the same decision.
    fn id(&self) -> &str;
    /// The token it is about (for logs).
    fn token(&self) -> &str;
}

/// Whether `id` is usable as an item id: 1 to 128 of `a-z`, `0-9` and `-`.
///
/// The id becomes a file name (and an email's Message-ID), so nothing else is allowed.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One queued item and its delivery bookkeeping, as stored in `<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry<T> {
    /// The item, exactly as enqueued. (Outboxes written before the queue was shared name it
    /// `email`.)
    #[serde(alias = "email")]
    pub item: T,
    /// When it was enqueued: the queue sends oldest first.
    #[serde(with = "ts")]
    pub enqueued_at: Timestamp,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// Not tried again before this time; `None` until the first failure (due at once).
    #[serde(with = "ts_opt")]
    pub next_attempt: Option<Timestamp>,
    /// Why the last attempt failed (never contains a secret).
    pub last_error: Option<String>,
}

impl<T> Entry<T> {
    /// When this entry may be sent.
    pub fn due_at(&self) -> Timestamp {
        self.next_attempt.unwrap_or(self.enqueued_at)
    }
}

/// What a flush did; `E` is the receiver's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushReport<E> {
    /// Ids the receiver accepted (now out of the queue).
    pub sent: Vec<String>,
    /// Ids that were due but not delivered, with why; they stay queued (or were set aside).
    pub failed: Vec<(String, E)>,
    /// Entries still queued after the flush (failed ones and ones not yet due).
    pub remaining: usize,
}

impl<E> Default for FlushReport<E> {
    fn default() -> Self {
        FlushReport {
            sent: Vec::new(),
            failed: Vec::new(),
            remaining: 0,
        }
    }
}

/// What on-call can see of a queue while its receiver is not taking anything (`/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Items waiting for the receiver.
    pub pending: usize,
    /// When the oldest waiting item was queued; `None` when nothing waits.
    pub oldest_queued: Option<Timestamp>,
}

/// When to try a failed item again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// 30 s doubling per attempt up to [`BACKOFF_CAP`], with jitter (a transient failure).
    Backoff,
    /// The receiver said how long to wait (`Retry-After`), at least [`BACKOFF_BASE`].
    After(Duration),
    /// In [`BACKOFF_CAP`]: a person must fix something first (credentials, a refusal).
    Cap,
    /// Never again: the receiver refused this item as malformed. Kept in `rejected/`.
    SetAside,
}

/// One failed delivery, as the queue needs to know it.
#[derive(Debug, Clone)]
pub struct Failure<E> {
    /// Why, for the report and the entry's `last_error`.
    pub error: E,
    /// When to try again.
    pub plan: Plan,
    /// True when no other item could get through either (nothing listening): the rest of the
    /// due items are marked with the same failure instead of each waiting for a timeout.
    pub server_wide: bool,
}

/// A persistent queue in one directory. One process owns a state directory; a flush also
/// locks the directory against another process's flush.
#[derive(Debug)]
pub struct Queue<T> {
    dir: PathBuf,
    entries: RecordStore,
    sent_dir: PathBuf,
    rejected_dir: PathBuf,
    /// Two overlapping flushes in one process would send the same entry twice.
    flush_lock: tokio::sync::Mutex<()>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T: Queued> Queue<T> {
    /// Opens (creating, mode 0700) the queue in `dir`; `loses` says what a corrupt entry set
    /// aside costs (for its log line).
    ///
    /// # Errors
    /// The directory cannot be created or its mode set.
    pub fn open_dir(dir: PathBuf, loses: &'static str) -> std::io::Result<Queue<T>> {
        let sent_dir = dir.join("sent");
        let rejected_dir = dir.join("rejected");
        if let Some(parent) = dir.parent() {
            crate::fsutil::create_private_dir(parent)?;
        }
        for d in [&dir, &sent_dir] {
            // Items name tokens and their troubles: not for other local users. Created 0700
            // (never wider for a moment, whatever the umask), and an older one narrowed.
            crate::fsutil::create_private_dir(d)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Queue {
            entries: RecordStore::new(dir.clone(), Layout::Pretty).aside_loses(loses),
            dir,
            sent_dir,
            rejected_dir,
            flush_lock: tokio::sync::Mutex::new(()),
            _item: std::marker::PhantomData,
        })
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, id: &str) -> PathBuf {
        self.entries.path(id)
    }

    fn sent_path(&self, id: &str) -> PathBuf {
        self.sent_dir.join(id)
    }

    /// Queues `item`, on disk before this returns. Idempotent by id: an id that is already
    /// queued, set aside, or was delivered within [`SENT_RETENTION`], is left as it is and
    /// `false` is returned.
    ///
    /// # Errors
    /// An id that is not `[a-z0-9-]{1,128}` (`InvalidInput`), or the write failed.
    pub fn enqueue(&self, item: &T, now: Timestamp) -> std::io::Result<bool> {
        let id = item.id();
        if !valid_id(id) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} id {id:?} is not 1 to 128 of a-z, 0-9 and -", T::NOUN),
            ));
        }
        if self.entry_path(id).exists()
            || self.sent_path(id).exists()
            || self.rejected_dir.join(format!("{id}.json")).exists()
        {
            tracing::debug!(id = %id, token = %item.token(), "{} already queued or sent; not queued again", T::NOUN);
            return Ok(false);
        }
        let entry = Entry {
            item: item.clone(),
            enqueued_at: now,
            attempts: 0,
            next_attempt: None,
            last_error: None,
        };
        self.save(&entry)?;
        tracing::debug!(id = %id, token = %item.token(), "{} queued", T::NOUN);
        Ok(true)
    }

    fn save(&self, entry: &Entry<T>) -> std::io::Result<()> {
        self.entries
            .save(entry.item.id(), entry)
            .map_err(StateError::into_io)
    }

    /// Every queued entry, sorted by `enqueued_at` then id. A file that cannot be parsed is
    /// logged and left in place for a person to look at.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn pending(&self) -> std::io::Result<Vec<Entry<T>>> {
        let mut out = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            // Skips `sent/`, `rejected/` and the temp files of an atomic write
            // (`.<name>.tmp.<pid>`).
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') || !item.file_type()?.is_file() {
                continue;
            }
            match self.entries.load::<Entry<T>>(id) {
                Ok(Some(entry)) if entry.item.id() == id => out.push(entry),
                // Sent and removed by a flush since the listing.
                Ok(None) => {}
                Ok(_) => {
                    tracing::error!(file = %item.path().display(), "queue entry's id does not match its file name; skipped")
                }
                Err(e) => {
                    tracing::error!(file = %item.path().display(), error = %e, "unreadable queue entry; skipped")
                }
            }
        }
        out.sort_by(|a, b| (a.enqueued_at, a.item.id()).cmp(&(b.enqueued_at, b.item.id())));
        Ok(out)
    }

    /// The entries a receiver refused as malformed, kept in `rejected/`.
    pub fn rejected(&self) -> usize {
        std::fs::read_dir(&self.rejected_dir)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    }

    /// An exclusive lock on the queue for one flush, across processes; `None` when another
    /// process holds it.
    pub(crate) fn try_lock_dir(&self) -> std::io::Result<Option<RecordLock>> {
        self.entries.try_lock_dir().map_err(StateError::into_io)
    }

    /// How many items wait, and since when. Entries are never dropped for their age or their
    /// number of attempts (an alert that is late is still worth more than none), so this is
    /// how a long outage shows.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn backlog(&self) -> std::io::Result<Backlog> {
        let pending = self.pending()?;
        Ok(Backlog {
            pending: pending.len(),
            oldest_queued: pending.iter().map(|e| e.enqueued_at).min(),
        })
    }

    /// How many items are queued (0 if the directory cannot be read).
    pub fn len(&self) -> usize {
        self.pending().map(|p| p.len()).unwrap_or(0)
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the earliest entry becomes due (in the past when one is due now); `None` when
    /// the queue is empty.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.pending().ok()?.iter().map(Entry::due_at).min()
    }

    /// Sends every entry due at `now`, oldest first, through `send`. An entry is deleted only
    /// after the receiver accepted it. A failure is recorded in the entry (`attempts`,
    /// `last_error`) and delays it by its [`Plan`]; [`Plan::SetAside`] moves it to
    /// `rejected/`. When the receiver cannot be reached at all, the remaining due entries are
    /// marked with the same failure rather than each waiting for its own timeout. `via` names
    /// the receiver in logs.
    pub async fn flush_with<E, F, Fut>(
        &self,
        now: Timestamp,
        via: &str,
        mut send: F,
    ) -> FlushReport<E>
    where
        E: Clone + std::fmt::Display,
        F: FnMut(T) -> Fut,
        Fut: std::future::Future<Output = Result<(), Failure<E>>>,
    {
        let noun = T::NOUN;
        let _guard = self.flush_lock.lock().await;
        let mut report = FlushReport::default();
        // Another process (the daemon, or a `tokenwarden rotate` beside it) flushing the same
        // queue right now would send the same entries: let it, and send nothing here.
        let _process_lock = match self.try_lock_dir() {
            Ok(Some(f)) => f,
            Ok(None) => {
                tracing::debug!(dir = %self.dir.display(), "another process is sending from the queue");
                report.remaining = self.len();
                return report;
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot lock the queue; nothing sent");
                report.remaining = self.len();
                return report;
            }
        };
        self.prune_sent(now);
        let entries = match self.pending() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot read the queue; nothing sent");
                return report;
            }
        };
        let mut server_down: Option<Failure<E>> = None;
        for mut entry in entries {
            if entry.due_at() > now {
                continue;
            }
            let id = entry.item.id().to_string();
            let token = entry.item.token().to_string();
            if self.sent_path(&id).exists() {
                // Delivered by a flush that stopped before removing the entry.
                self.remove_entry(&id, &token);
                continue;
            }
            let failure = match &server_down {
                Some(f) => f.clone(),
                None => match send(entry.item.clone()).await {
                    Ok(()) => {
                        crate::failpoint::hit("outbox.after_send");
                        self.mark_sent(&id, &token, now);
                        tracing::info!(id = %id, token = %token, attempts = entry.attempts + 1, via = %via, "{noun} delivered");
                        report.sent.push(id);
                        continue;
                    }
                    Err(f) => {
                        if f.server_wide {
                            server_down = Some(f.clone());
                        }
                        f
                    }
                },
            };
            entry.attempts = entry.attempts.saturating_add(1);
            entry.last_error = Some(failure.error.to_string());
            if failure.plan == Plan::SetAside {
                tracing::error!(id = %id, token = %token, via = %via, error = %failure.error, "{noun} refused as malformed; set aside in rejected/, not retried");
                self.set_aside(&entry);
                report.failed.push((id, failure.error));
                continue;
            }
            let delay = backoff(entry.attempts, failure.plan, &id);
            let next = now
                .checked_add(
                    jiff::SignedDuration::try_from(delay)
                        .unwrap_or(jiff::SignedDuration::from_secs(3600)),
                )
                .unwrap_or(now);
            entry.next_attempt = Some(next);
            match failure.plan {
                Plan::Cap => {
                    tracing::error!(id = %id, token = %token, via = %via, attempts = entry.attempts, next_attempt = %next, error = %failure.error, "{noun} refused; kept, will retry in an hour: fix the cause")
                }
                _ => {
                    tracing::warn!(id = %id, token = %token, via = %via, attempts = entry.attempts, next_attempt = %next, error = %failure.error, "{noun} not delivered; will retry")
                }
            }
            if let Err(e) = self.save(&entry) {
                // The entry stays as it was, due now: retried sooner, never lost.
                tracing::error!(id = %id, token = %token, error = %e, "cannot record the failed attempt in the queue");
            }
            report.failed.push((id, failure.error));
        }
        report.remaining = self.len();
        report
    }

    /// Moves a refused entry to `rejected/` (kept for a person; never sent again).
    fn set_aside(&self, entry: &Entry<T>) {
        let id = entry.item.id();
        let kept = crate::fsutil::create_private_dir(&self.rejected_dir).and_then(|()| {
            let bytes = serde_json::to_vec_pretty(entry).unwrap_or_default();
            write_atomic(&self.rejected_dir.join(format!("{id}.json")), &bytes, 0o600)
        });
        match kept {
            Ok(()) => self.remove_entry(id, entry.item.token()),
            Err(e) => {
                tracing::error!(id = %id, error = %e, "cannot set a refused item aside; it stays queued")
            }
        }
    }

    /// Marker first, then removal: a crash in between must not lead to a second send.
    fn mark_sent(&self, id: &str, token: &str, now: Timestamp) {
        if let Err(e) = write_atomic(&self.sent_path(id), now.to_string().as_bytes(), 0o600) {
            tracing::error!(id = %id, token = %token, error = %e, "cannot record a delivered {}; it may be sent again after a restart", T::NOUN);
        }
        crate::failpoint::hit("outbox.after_mark");
        self.remove_entry(id, token);
    }

    fn remove_entry(&self, id: &str, token: &str) {
        match std::fs::remove_file(self.entry_path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(id = %id, token = %token, error = %e, "cannot remove a delivered {} from the queue", T::NOUN)
            }
        }
    }

    /// Forgets delivered ids older than [`SENT_RETENTION`], by the delivery time written in
    /// each marker: the same clock as `now`, which callers (and tests) supply.
    fn prune_sent(&self, now: Timestamp) {
        let Ok(items) = std::fs::read_dir(&self.sent_dir) else {
            return;
        };
        for item in items.flatten() {
            let sent_at = std::fs::read_to_string(item.path())
                .ok()
                .and_then(|t| t.trim().parse::<Timestamp>().ok());
            let old = sent_at
                .and_then(|t| Duration::try_from(now.duration_since(t)).ok())
                .is_some_and(|age| age > SENT_RETENTION);
            if old {
                let _ = std::fs::remove_file(item.path());
            }
        }
    }
}

/// Delay before the next attempt after `attempts` failures with `plan`.
pub(crate) fn backoff(attempts: u32, plan: Plan, id: &str) -> Duration {
    match plan {
        Plan::Backoff => {}
        Plan::After(d) => return d.clamp(BACKOFF_BASE, BACKOFF_CAP),
        Plan::Cap | Plan::SetAside => return BACKOFF_CAP,
    }
    let exp = attempts.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP);
    // Jitter spreads retries of many entries (and of several daemons sharing a receiver); a
    // per-process random hasher is randomness enough and needs no extra dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(id.as_bytes());
    h.write_u32(attempts);
    let fraction = (h.finish() % 1000) as u32;
    full - full / 4 * fraction / 1000
}

/// Timestamps as RFC 3339 strings (jiff's serde support is not enabled).
mod ts {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &jiff::Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<jiff::Timestamp, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// As [`ts`], for an optional timestamp.
mod ts_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &Option<jiff::Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(t),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<jiff::Timestamp>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| s.parse().map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_30s_caps_at_an_hour_and_jitters_down_only() {
        for (attempts, full) in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (40, 3600)] {
            let d = backoff(attempts, Plan::Backoff, "a").as_secs();
            assert!(d <= full && d >= full * 3 / 4, "attempt {attempts}: {d}s");
        }
        assert_eq!(backoff(1, Plan::Cap, "a"), BACKOFF_CAP);
        assert_eq!(
            backoff(1, Plan::After(Duration::from_secs(120)), "a"),
            Duration::from_secs(120)
        );
        // A receiver asking for no wait, or for a day, is held to the queue's bounds.
        assert_eq!(backoff(1, Plan::After(Duration::ZERO), "a"), BACKOFF_BASE);
        assert_eq!(
            backoff(1, Plan::After(Duration::from_secs(86_400)), "a"),
            BACKOFF_CAP
        );
    }

    #[test]
    fn valid_ids_are_file_names() {
        assert!(valid_id("prod-1"));
        for id in ["", "../x", "A", "a/b", &"a".repeat(129)] {
            assert!(!valid_id(id), "{id:?}");
        }
    }
}
