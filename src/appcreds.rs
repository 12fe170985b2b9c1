//! The credentials of the apps tokenwarden itself authenticates as: the Meta app of `[meta]`
//! (every `debug_token` inspection) and the Instagram or Threads product app of a token
//! (`app`: the Threads app token, the exchange of a short-lived token).
//!
//! A refused app secret is the app's trouble, not any token's: one condition for the app,
//! told once per app and secret (repeated every `repeat_interval` while it lasts, a new wrong
//! secret told anew) and ended once, when Meta accepts the app again, however many tokens met
//! the refusal. [`decide`] is pure and takes `now`; [`settle`] keeps a small record per app
//! (`<state_dir>/apps/<app id>.json`) and queues what was decided before the record says so,
//! so a crash in between queues the same alert again under the same id (every queue ignores
//! an id it holds).

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::meta::kind::Kind;
use crate::secret::Fingerprint;
use crate::state::{APPS_DIR, Layout, RecordStore, StateError};

/// What one look at an app's credentials found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Meta refused the app's secret (fingerprint `secret`) with `detail`.
    Refused {
        /// The fingerprint of the secret Meta refused.
        secret: Fingerprint,
        /// Meta's answer, scrubbed.
        detail: String,
    },
    /// Meta accepted the app's credentials.
    Accepted,
}

/// What is known of one app's credentials. Persisted per app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The refusal going on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// Refusal episodes so far: numbers the ids of their alerts and recoveries.
    #[serde(default)]
    pub episodes: u32,
}

/// A refusal going on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The fingerprint of the refused secret.
    pub secret: Fingerprint,
    /// The first refusal of this episode.
    pub since: Timestamp,
    /// The latest alert about it.
    pub last: Timestamp,
    /// Alerts about this secret so far.
    pub count: u32,
    /// Meta's latest answer.
    pub detail: String,
}

/// An alert to send about an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The app's credentials are refused (first, a repeat, or a new secret refused too).
    Refused {
        /// Unique for this alert, stable across a crash and a re-decision.
        key: String,
        /// 1 for the first alert about this secret, 2 for the first repeat, ...
        occurrence: u32,
    },
    /// Meta accepts the app again: the one recovery of the episode.
    Accepted {
        /// Unique for this recovery.
        key: String,
        /// When the refusal began.
        since: Timestamp,
    },
}

/// The alert due now about an app whose record is `record`, after `seen`, and the record
/// after sending it.
pub fn decide(
    record: &Record,
    seen: &Seen,
    repeat: Duration,
    now: Timestamp,
) -> (Option<Notice>, Record) {
    let mut r = record.clone();
    match seen {
        Seen::Accepted => match r.refused.take() {
            Some(was) => (
                Some(Notice::Accepted {
                    key: format!("accepted-{}", r.episodes),
                    since: was.since,
                }),
                r,
            ),
            None => (None, r),
        },
        Seen::Refused { secret, detail } => {
            let occurrence = match &r.refused {
                None => {
                    r.episodes += 1;
                    Some(1)
                }
                // A new secret refused too: told anew, as its own first alert.
                Some(was) if was.secret != *secret => Some(1),
                Some(was) if now.as_second() - was.last.as_second() >= repeat.as_secs() as i64 => {
                    Some(was.count + 1)
                }
                Some(_) => None,
            };
            let since = r.refused.as_ref().map_or(now, |w| w.since);
            let last = match (&r.refused, occurrence) {
                (Some(was), None) => was.last,
                _ => now,
            };
            let count = occurrence.unwrap_or_else(|| r.refused.as_ref().map_or(1, |w| w.count));
            r.refused = Some(Refusal {
                secret: *secret,
                since,
                last,
                count,
                detail: detail.clone(),
            });
            let notice = occurrence.map(|occurrence| Notice::Refused {
                key: format!("refused-{}-{secret}-{occurrence}", r.episodes),
                occurrence,
            });
            (notice, r)
        }
    }
}

/// Which app: its kind (the Meta app of `[meta]` is [`Kind::Whatsapp`]'s Graph) and id.
#[derive(Debug, Clone, Copy)]
pub struct App<'a> {
    /// Whose app: [`Kind::Instagram`] or [`Kind::Threads`] for a product app; any Graph kind
    /// for the Meta app of `[meta]`.
    pub kind: Kind,
    /// The app id.
    pub app_id: &'a str,
}

impl App<'_> {
    /// Whether this is a product app (Instagram or Threads) rather than the `[meta]` app.
    fn product(&self) -> bool {
        !self.kind.debug_token()
    }

    /// The app's name in words: "the Meta app 123", "the Threads app 456".
    fn words(&self) -> String {
        if self.product() {
            format!("the {} app {}", self.kind, self.app_id)
        } else {
            format!("the Meta app {}", self.app_id)
        }
    }

    /// The thread (and channel token) its alerts go under.
    fn thread(&self) -> String {
        format!("app-{}", self.app_id)
    }
}

/// The records of every app, under `state_dir`.
fn records(state_dir: &Path) -> RecordStore {
    RecordStore::new(state_dir.join(APPS_DIR), Layout::Pretty).aside_loses(
        "whether an app's credentials were refused is then unknown until the next check",
    )
}

/// The record of `app_id`, if any.
///
/// # Errors
/// The record cannot be read.
pub fn load(state_dir: &Path, app_id: &str) -> Result<Option<Record>, StateError> {
    records(state_dir).load(app_id)
}

/// Every app whose credentials Meta refuses now, by id, with the refusal: what `/metrics`
/// shows. A record that cannot be read is left out (and logged).
///
/// # Errors
/// The directory exists but cannot be listed.
pub fn refused(state_dir: &Path) -> std::io::Result<Vec<(String, Refusal)>> {
    let store = records(state_dir);
    let entries = match std::fs::read_dir(store.dir()) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        // App ids are digits (`config check` refuses others): anything else is not a record.
        let Some(app_id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        match store.load::<Record>(app_id) {
            Ok(Some(Record {
                refused: Some(r), ..
            })) => out.push((app_id.to_string(), r)),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(app = %app_id, error = %e, "cannot read the app's credentials record")
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Records what a look at `app`'s credentials found and queues the alert it calls for: the
/// decision of [`decide`], queued (email and receivers) before the record is saved.
///
/// # Errors
/// The record cannot be read or saved, or the alert cannot be queued (nothing is recorded:
/// the next look decides it again).
pub fn settle(
    state_dir: &Path,
    sinks: crate::notify::Sinks<'_>,
    audit: &crate::audit::Audit,
    app: App<'_>,
    seen: &Seen,
    repeat: Duration,
    now: Timestamp,
) -> Result<(), StateError> {
    let store = records(state_dir);
    let record: Record = store.load(app.app_id)?.unwrap_or_default();
    let (notice, next) = decide(&record, seen, repeat, now);
    if let Some(n) = &notice {
        let (key, rendered, signal_status) = render(&app, n, &next, repeat);
        let ends = [crate::channel::family::CREDENTIALS];
        let resolved = matches!(n, Notice::Accepted { .. });
        let signal = crate::channel::Signal {
            family: crate::channel::family::CREDENTIALS,
            severity: if resolved {
                crate::channel::Severity::Info
            } else {
                crate::channel::Severity::Critical
            },
            status: signal_status,
            state: if resolved { "RESOLVED" } else { "CONFIG" },
            fingerprint: None,
            resolves: if resolved { &ends } else { &[] },
        };
        let thread = app.thread();
        crate::notify::queue(
            sinks,
            audit,
            crate::notify::email_id(&thread, &key),
            &thread,
            rendered,
            &signal,
            "app credentials alert",
            now,
        )
        .map_err(|source| StateError::Io {
            path: store.dir().to_path_buf(),
            source,
        })?;
    }
    if next != record {
        store.save(app.app_id, &next)?;
    }
    Ok(())
}

/// The email (and channel alert) for `n` about `app`.
fn render(
    app: &App<'_>,
    n: &Notice,
    after: &Record,
    repeat: Duration,
) -> (String, crate::alert::Rendered, crate::channel::Status) {
    let who = app.words();
    match n {
        Notice::Refused { key, occurrence } => {
            let r = after.refused.as_ref().expect("a refusal is recorded");
            let headline = format!("Meta refused {who}'s own credentials");
            let (where_, what) = if app.product() {
                (
                    format!(
                        "App Dashboard > {} (the {} app's own id and secret, not the Meta app's)",
                        app.kind.advice().dashboard,
                        app.kind
                    ),
                    format!(
                        "the `app.app_secret` of every {} token whose `app` names app {}",
                        app.kind, app.app_id
                    ),
                )
            } else {
                (
                    "the Meta app dashboard, App settings > Basic > App secret".to_string(),
                    "`app_secret` in tokenwarden's [meta]".to_string(),
                )
            };
            let uses = if app.product() {
                format!(
                    "tokenwarden cannot renew the {} tokens of this app that need the secret (the exchange of a short-lived token) until it is fixed.",
                    app.kind
                )
            } else {
                "tokenwarden cannot inspect any token with this app until it is fixed: their states are UNKNOWN, their known expiries are still watched, and none is called dead or rotated on it.".to_string()
            };
            let a = crate::alert::HostAlert {
                word: "CONFIG",
                headline: &headline,
                lead: format!(
                    "{} refused the secret tokenwarden holds for {who} (secret fingerprint {}): {}. This says nothing about the tokens themselves.",
                    app.kind.host(),
                    r.secret,
                    r.detail
                ),
                facts: vec![
                    format!("Refused since {}.", crate::timefmt::utc(r.since)),
                    uses,
                ],
                will_do: vec![
                    format!(
                        "Keep checking; repeat this alert every {} while Meta refuses this secret (this is alert {occurrence}), and send one recovery when Meta accepts the app again.",
                        crate::timefmt::span(repeat.as_secs() as i64)
                    ),
                ],
                todo: vec![
                    format!("Copy {who}'s current secret from {where_}; if it was reset, the old one no longer works."),
                    format!("Put it where {what} points (never into the config file itself)."),
                    "Run `tokenwarden doctor`, then reload tokenwarden (`systemctl reload tokenwarden`).".into(),
                ],
            };
            (
                key.clone(),
                crate::alert::render_host(&a),
                crate::channel::Status::Firing,
            )
        }
        Notice::Accepted { key, since } => {
            let headline = format!("Meta accepts {who}'s credentials again");
            let a = crate::alert::HostAlert {
                word: "RESOLVED",
                headline: &headline,
                lead: format!(
                    "{} accepts the secret tokenwarden holds for {who} again. No action is needed.",
                    app.kind.host()
                ),
                facts: vec![format!(
                    "It was refused from {}.",
                    crate::timefmt::utc(*since)
                )],
                will_do: vec!["Check and renew the app's tokens as usual.".into()],
                todo: Vec::new(),
            };
            (
                key.clone(),
                crate::alert::render_host(&a),
                crate::channel::Status::Resolved,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: Duration = Duration::from_secs(86_400);

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + s).unwrap()
    }

    fn refused(s: &str) -> Seen {
        Seen::Refused {
            secret: Fingerprint::of(s),
            detail: "code 190 (HTTP 400): Invalid OAuth access token signature.".into(),
        }
    }

    fn keys(steps: &[(i64, Seen)]) -> Vec<String> {
        let mut r = Record::default();
        let mut out = Vec::new();
        for (at, seen) in steps {
            let (n, next) = decide(&r, seen, DAY, ts(*at));
            r = next;
            out.extend(n.map(|n| match n {
                Notice::Refused { key, .. } | Notice::Accepted { key, .. } => key,
            }));
        }
        out
    }

    /// Many tokens meeting the same refusal in one pass, and pass after pass: one alert per
    /// app and secret, repeated daily, a new secret told anew, and one recovery.
    #[test]
    fn once_per_app_and_secret_repeated_and_one_recovery() {
        let a = Fingerprint::of("secret-a");
        let b = Fingerprint::of("secret-b");
        let got = keys(&[
            (0, refused("secret-a")),
            (1, refused("secret-a")),
            (2, refused("secret-a")),
            (HOUR, refused("secret-a")),
            (25 * HOUR, refused("secret-a")),
            (25 * HOUR + 5, refused("secret-a")),
            (26 * HOUR, refused("secret-b")),
            (26 * HOUR + 5, refused("secret-b")),
            (27 * HOUR, Seen::Accepted),
            (27 * HOUR + 5, Seen::Accepted),
            (28 * HOUR, refused("secret-a")),
        ]);
        assert_eq!(
            got,
            vec![
                format!("refused-1-{a}-1"),
                format!("refused-1-{a}-2"),
                format!("refused-1-{b}-1"),
                "accepted-1".to_string(),
                format!("refused-2-{a}-1"),
            ]
        );
    }

    #[test]
    fn accepted_without_a_refusal_says_nothing() {
        let (n, r) = decide(&Record::default(), &Seen::Accepted, DAY, ts(0));
        assert_eq!((n, r), (None, Record::default()));
    }
}
