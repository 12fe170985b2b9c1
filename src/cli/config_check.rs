//! `tokenwarden config check`: the config validated and every secret it references read; 0,
//! or 78 listing every error. The unit runs it as `ExecStartPre=`, so it must fail wherever the
//! daemon would.

use std::path::PathBuf;

use super::{Exit, Step, load_config};
use crate::config::{self, Config};
use crate::graph::version::VersionStatus;

/// Validates the config and prints a summary of the tokens and groups.
pub(super) fn run(flag: Option<PathBuf>) -> Step<Exit> {
    let cfg = load_config(flag)?;
    unreadable_secrets(&cfg)?;
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    match cfg.meta.api_version.status(today) {
        s @ VersionStatus::Supported(_) => {
            tracing::debug!("Graph API {}: {s}", cfg.meta.api_version)
        }
        s => tracing::warn!("`meta.api_version` {}: {s}", cfg.meta.api_version),
    }
    source_conflicts(&cfg)?;
    if cfg.email.is_none() && cfg.receivers.is_empty() {
        tracing::warn!(
            "no [email] section and no [[receiver]]: `tokenwarden run` will only log its alerts"
        );
    }
    // The shipped unit's stop timeout must cover the slowest step that is finished on a stop.
    for w in crate::liveness::unit_warnings(&cfg, &crate::liveness::SHIPPED_UNIT) {
        tracing::warn!("{w}");
    }
    let names: Vec<&str> = cfg.tokens.iter().map(|t| t.name.as_str()).collect();
    println!(
        "{}: OK, {} token(s): {}",
        cfg.path.display(),
        names.len(),
        names.join(", ")
    );
    for r in &cfg.receivers {
        let takes = r.severities.as_ref().map_or_else(
            || "every alert".to_string(),
            |list| {
                let words: Vec<&str> = list.iter().map(|s| s.word()).collect();
                format!("{} alerts", words.join(", "))
            },
        );
        println!("receiver {} ({}): {takes}", r.name, r.kind.word());
    }
    for g in &cfg.groups {
        // Listing the members needs the store: `tokenwarden check` does it.
        println!(
            "group {}: members found on each run in {}",
            g.name,
            describe_discover(&g.discover)
        );
    }
    Ok(Exit::Ok)
}

/// Reads every secret the config references (the app secret, the SMTP password, each mint's
/// admin token, each webhook's secret, the groups' too): each one that cannot be read is an
/// error at its field (78), as the daemon would fail on it later.
fn unreadable_secrets(cfg: &Config) -> Step<()> {
    // The text only places the errors: a file that changed since it was loaded puts them on
    // line 1, still naming the field.
    let text = std::fs::read_to_string(&cfg.path).unwrap_or_default();
    let problems = config::check_secrets(cfg, &text);
    if problems.is_empty() {
        return Ok(());
    }
    for p in problems {
        eprintln!("error: {p}");
    }
    Err(Exit::Config)
}

/// What the last checks learned can make a source impossible: refreshing a token that never
/// expires would trade it for a 60-day one. Each conflict is an error (78).
fn source_conflicts(cfg: &Config) -> Step<()> {
    let Ok(snap) = crate::state::StateStore::new(&cfg.state_dir).load() else {
        return Ok(());
    };
    let conflicts: Vec<String> = cfg
        .tokens
        .iter()
        .filter_map(|t| {
            let facts = snap.tokens.get(&t.name).and_then(|s| s.facts.as_ref());
            crate::rotation::source_conflict(t, facts)
        })
        .collect();
    if conflicts.is_empty() {
        return Ok(());
    }
    for c in conflicts {
        eprintln!("error: {}: {c}", cfg.path.display());
    }
    Err(Exit::Config)
}

/// Where a group's members are found, in words.
fn describe_discover(d: &config::DiscoverConfig) -> String {
    match d {
        config::DiscoverConfig::File { path, key_prefix } => format!(
            "the file store {} (entries starting with `{key_prefix}`)",
            path.as_deref()
                .map_or("in the state directory".into(), |p| p.display().to_string())
        ),
        config::DiscoverConfig::Aws {
            name_prefix,
            tag_key,
            tag_value,
            ..
        } => {
            let mut parts = Vec::new();
            if let Some(p) = name_prefix {
                parts.push(format!("named `{p}*`"));
            }
            if let Some(k) = tag_key {
                parts.push(match tag_value {
                    Some(v) => format!("tagged `{k}={v}`"),
                    None => format!("tagged `{k}`"),
                });
            }
            format!("AWS Secrets Manager (secrets {})", parts.join(" and "))
        }
    }
}
