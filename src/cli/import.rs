//! `tokenwarden import`: a token from standard input stored as the current version of its
//! file store, unless it looks wrongly pasted. For a kind Meta's `debug_token` does not inspect
//! (Instagram, Threads), the token's expiry can be given (`--expires-in`, `--expires-at`) and is
//! recorded as a renewal's `expires_in` is; without it, `import` says the expiry is unknown.

use std::path::PathBuf;

use jiff::Timestamp;

use super::{Exit, Step, failed, failed_with, load_config, read_token_from_stdin};
use crate::meta::kind::{Kind, LONG_LIVED_SECS};
use crate::observe::{ExpiryLog, RecordedExpiry};
use crate::secret::Fingerprint;
use crate::store::{self, SecretStore};

/// An expiry given by hand on the command line, not yet parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Given {
    /// Neither flag.
    Nothing,
    /// `--expires-in DURATION`.
    In(String),
    /// `--expires-at RFC3339`.
    At(String),
}

impl Given {
    /// The flags as clap parsed them (it refuses both at once).
    pub(super) fn from_flags(expires_in: Option<&str>, expires_at: Option<&str>) -> Given {
        match (expires_in, expires_at) {
            (Some(d), _) => Given::In(d.to_string()),
            (None, Some(t)) => Given::At(t.to_string()),
            (None, None) => Given::Nothing,
        }
    }

    fn flag(&self) -> &'static str {
        match self {
            Given::In(_) => "--expires-in",
            Given::At(_) | Given::Nothing => "--expires-at",
        }
    }
}

/// Meta rounds `expires_in`; a given expiry up to an hour past 60 days is taken as 60 days.
const SLACK_SECS: i64 = 3600;

/// The expiry `given` names at `now`, checked: in the future and no further than a long-lived
/// token lives. `Ok(None)` when nothing was given. The error names the flag and its value (an
/// expiry is no secret).
fn resolve(given: &Given, now: Timestamp) -> Result<Option<Timestamp>, String> {
    let at = match given {
        Given::Nothing => return Ok(None),
        Given::In(text) => {
            let d = crate::config::parse_duration(text).ok_or_else(|| {
                format!(
                    "--expires-in {text:?}: not a duration (one number and a unit: 59d, 36h, 90m)"
                )
            })?;
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            Timestamp::from_second(now.as_second().saturating_add(secs))
                .map_err(|_| format!("--expires-in {text:?}: too far in the future"))?
        }
        Given::At(text) => text.parse::<Timestamp>().map_err(|_| {
            format!(
                "--expires-at {text:?}: not an RFC 3339 time (for example 2027-01-25T10:00:00Z)"
            )
        })?,
    };
    let shown = match given {
        Given::In(t) | Given::At(t) => t.as_str(),
        Given::Nothing => "",
    };
    if at <= now {
        return Err(format!(
            "{} {shown:?}: the token would already have expired ({}); an expired Instagram or Threads token cannot be refreshed, only replaced by a new login",
            given.flag(),
            crate::timefmt::utc(at)
        ));
    }
    if at.as_second() - now.as_second() > LONG_LIVED_SECS + SLACK_SECS {
        return Err(format!(
            "{} {shown:?}: more than 60 days from now ({}), longer than Meta's long-lived tokens live; give the expiry Meta stated",
            given.flag(),
            crate::timefmt::utc(at)
        ));
    }
    Ok(Some(at))
}

/// The record of a token version `fingerprint` whose expiry `at` was given at `now`, as a
/// renewal's `expires_in` is recorded. Its issue time is when a 60-day token expiring at `at`
/// was made (never later than `now`): the 24-hour rule before a refresh then holds for a token
/// just made, and a token with less than a day left is not kept from its refresh for a day.
fn entry(fingerprint: Fingerprint, at: Timestamp, now: Timestamp) -> RecordedExpiry {
    let made = at.as_second() - LONG_LIVED_SECS;
    let issued_at = Timestamp::from_second(made.min(now.as_second())).unwrap_or(now);
    RecordedExpiry {
        fingerprint,
        issued_at,
        expires_at: Some(at),
    }
}

/// The expiry given on `import` or `stage` for token `t`, checked: refused (the command's
/// failure, saying nothing was `done`) for a kind `debug_token` inspects, or when it does not
/// parse or is out of range.
pub(super) fn given_expiry(
    t: &crate::config::TokenConfig,
    given: &Given,
    now: Timestamp,
    done: &str,
) -> Step<Option<Timestamp>> {
    if *given != Given::Nothing && t.kind.debug_token() {
        let name = &t.name;
        return Err(failed_with(format!(
            "{} is only for instagram and threads tokens: `{name}` is a {} token, which Meta's debug_token inspects, so its expiry is Meta's own (see `tokenwarden doctor --token {name}`); nothing was {done}",
            given.flag(),
            t.kind
        )));
    }
    resolve(given, now).map_err(|e| failed_with(format!("{e}; nothing was {done}")))
}

/// Records the expiry `at` given at `now` for version `fingerprint` of token `name`.
pub(super) fn record_given(
    log: &ExpiryLog,
    name: &str,
    fingerprint: Fingerprint,
    at: Timestamp,
    now: Timestamp,
) -> Step<()> {
    log.record(name, entry(fingerprint, at, now))
        .map_err(|e| failed(&e))
}

/// Stores the value read from standard input for `--token NAME`, with the expiry `given` for
/// a kind `debug_token` does not inspect.
pub(super) async fn run(flag: Option<PathBuf>, name: &str, given: Given) -> Step<Exit> {
    let cfg = load_config(flag)?;
    let Some(t) = cfg.token(name) else {
        eprintln!("error: no token named `{name}` in {}", cfg.path.display());
        return Err(Exit::Config);
    };
    let now = Timestamp::now();
    let given_at = given_expiry(t, &given, now, "stored")?;
    let opened = store::Store::open(&t.store, &t.name, &cfg.state_dir)
        .await
        .map_err(|e| failed(&e))?;
    let store::Store::File(file) = opened else {
        return Err(failed_with(format!(
            "token `{name}` lives in AWS Secrets Manager: put it there with `aws secretsmanager put-secret-value`"
        )));
    };
    let value = read_token_from_stdin()?;
    let findings = crate::lint::check_value(value.expose());
    if !findings.is_empty() {
        for f in findings {
            eprintln!("error: {}", f.explain());
        }
        return Err(failed_with(format!(
            "refusing to store this value for `{name}`"
        )));
    }
    let log = ExpiryLog::new(&cfg.state_dir);
    // Recorded before the token is stored, as a renewal does: the first check after the import
    // knows the expiry.
    if let Some(at) = given_at {
        record_given(&log, name, value.fingerprint(), at, now)?;
    }
    file.import_current(&value, now).map_err(|e| failed(&e))?;
    println!(
        "stored token `{name}` (fingerprint {}) in {}; check it with `tokenwarden doctor --token {name}`",
        value.fingerprint(),
        file.describe()
    );
    if !t.kind.debug_token() {
        println!(
            "{}",
            expiry_note(t.kind, name, given_at, &log, value.fingerprint())
        );
    }
    Ok(Exit::Ok)
}

/// What `import` says about the expiry of a token `debug_token` does not inspect: given, known
/// from an exchange `stage` recorded, or unknown until the first refresh (and how to give it).
fn expiry_note(
    kind: Kind,
    name: &str,
    given: Option<Timestamp>,
    log: &ExpiryLog,
    fingerprint: Fingerprint,
) -> String {
    if let Some(at) = given {
        return format!(
            "its expiry, {}, is recorded as the expiry Meta stated; tokenwarden warns and refreshes from it",
            crate::timefmt::utc(at)
        );
    }
    if let Some(at) = log.find(name, fingerprint).and_then(|r| r.expires_at) {
        return format!(
            "its expiry, {}, was recorded when Meta made it (exchange or refresh)",
            crate::timefmt::utc(at)
        );
    }
    format!(
        "its expiry is unknown until tokenwarden first refreshes it: Meta's debug_token does not inspect {kind} tokens, so no warning can come before it lapses; if you know it, import again with `--expires-in DURATION` (for example 59d, as Meta's expires_in said) or `--expires-at RFC3339`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn an_expiry_is_given_in_a_duration_or_a_time_and_checked() {
        assert_eq!(resolve(&Given::Nothing, now()), Ok(None));
        let in59 = resolve(&Given::In("59d".into()), now()).unwrap().unwrap();
        assert_eq!(in59.as_second() - now().as_second(), 59 * 86_400);
        let at = resolve(&Given::At("2027-01-01T00:00:00Z".into()), now())
            .unwrap()
            .unwrap();
        assert_eq!(at, "2027-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        let e = resolve(&Given::In("59 days".into()), now()).unwrap_err();
        assert!(e.contains("--expires-in") && e.contains("59 days"), "{e}");
        let e = resolve(&Given::At("tomorrow".into()), now()).unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        let e = resolve(&Given::At("2026-11-01T00:00:00Z".into()), now()).unwrap_err();
        assert!(e.contains("already have expired"), "{e}");
        let e = resolve(&Given::In("0s".into()), now()).unwrap_err();
        assert!(e.contains("already have expired"), "{e}");
        let e = resolve(&Given::In("90d".into()), now()).unwrap_err();
        assert!(e.contains("more than 60 days"), "{e}");
        assert!(resolve(&Given::In("60d".into()), now()).is_ok());
    }

    #[test]
    fn a_given_expiry_is_recorded_with_the_issue_time_of_a_60_day_token() {
        let fp = crate::secret::Secret::new("IGtoken").fingerprint();
        let at = Timestamp::from_second(now().as_second() + 10 * 86_400).unwrap();
        let e = entry(fp, at, now());
        assert_eq!(e.expires_at, Some(at));
        assert_eq!(e.fingerprint, fp);
        // Made 50 days ago: old enough to refresh at once.
        assert_eq!(now().as_second() - e.issued_at.as_second(), 50 * 86_400);
        // A token 60 days from expiry was just made: never later than now.
        let fresh = Timestamp::from_second(now().as_second() + LONG_LIVED_SECS + 60).unwrap();
        assert_eq!(entry(fp, fresh, now()).issued_at, now());
    }
}
