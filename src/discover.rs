//! Token groups: tokens found in a store on each run rather than listed one by one.
//!
//! A `[[group]]` names where its members live (the entries of a file store under a key prefix,
//! or the Secrets Manager secrets under a name prefix and/or with a tag). [`members`] asks the
//! store (the IO); [`expand`] turns the members into ordinary [`TokenConfig`]s from the group's
//! template (pure): the token's name is `<group>.<member>`, the store points at the member's
//! secret, and `{token}` / `{member}` in the targets are filled in. Per-member Meta ids come
//! from the secret's tags [`TAG_PHONE`] and [`TAG_WABA`].
//!
//! The last good list of each group is kept in `groups/<group>.json` in the state directory, so
//! a store that cannot be listed this run (or at start) keeps the known members checked instead
//! of silently dropping them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, DiscoverConfig, GroupConfig, StoreConfig, TokenConfig};
use crate::store::StoreError;

/// Secret tag holding a member's WhatsApp phone-number id.
pub const TAG_PHONE: &str = "tokenwarden:phone_number_id";
/// Secret tag holding a member's WhatsApp Business Account id.
pub const TAG_WABA: &str = "tokenwarden:waba_id";

/// One token found in a group's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's part of the token name (the secret's name after the prefix, made safe).
    pub member: String,
    /// Where its token lives.
    pub store: StoreConfig,
    /// From the [`TAG_PHONE`] tag.
    pub phone_number_id: Option<String>,
    /// From the [`TAG_WABA`] tag.
    pub waba_id: Option<String>,
}

/// What listing one group found: its members, and the secrets it had to leave out (with why).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The members, sorted by name.
    pub members: Vec<Member>,
    /// Secrets left out, each with the reason (a name that cannot be made a token name, a
    /// clash with another member, a tag that is not an id).
    pub skipped: Vec<String>,
}

/// The longest token name (as for a `[[token]]`: it names files).
const MAX_NAME: usize = 64;

/// The member part for a store name after its prefix: letters, digits, `-`, `_` and `.` kept,
/// `/` becomes `.`, anything else `_`.
pub fn member_name(rest: &str) -> Result<String, String> {
    let name: String = rest
        .trim_matches('/')
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' => c,
            '/' => '.',
            _ => '_',
        })
        .collect();
    if name.is_empty() || name.starts_with('.') {
        return Err(format!("{rest:?} leaves no usable member name"));
    }
    // A member name reaches a target's argv through `{member}` (a dotenv `reload`, an
    // `exec` command): `cust---force` would have run `reload.sh --force`.
    if name.starts_with('-') {
        return Err(format!(
            "{rest:?}: a member name must not start with `-` (it would read as an option in a command's arguments)"
        ));
    }
    Ok(name)
}

/// The token name of `member` in `group`.
pub fn token_name(group: &str, member: &str) -> String {
    format!("{group}.{member}")
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Builds the member list from raw `(store name after the prefix, store, tags)` triples: names
/// made safe, too long or clashing names left out with a reason (pure).
pub fn collect(
    group: &str,
    found: impl IntoIterator<Item = (String, StoreConfig, Vec<(String, String)>)>,
) -> Found {
    let mut out = Found::default();
    let mut seen = HashSet::new();
    let mut all: Vec<_> = found.into_iter().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (rest, store, tags) in all {
        let member = match member_name(&rest) {
            Ok(m) => m,
            Err(e) => {
                out.skipped.push(e);
                continue;
            }
        };
        let name = token_name(group, &member);
        if name.len() > MAX_NAME {
            out.skipped.push(format!(
                "{rest:?}: the token name {name:?} is longer than {MAX_NAME} characters"
            ));
            continue;
        }
        if !seen.insert(member.clone()) {
            out.skipped.push(format!(
                "{rest:?}: another secret of the group already has the member name {member:?}"
            ));
            continue;
        }
        let tag = |k: &str| tags.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone());
        let (phone, waba) = (tag(TAG_PHONE), tag(TAG_WABA));
        if let Some(bad) = [(TAG_PHONE, &phone), (TAG_WABA, &waba)]
            .into_iter()
            .find(|(_, v)| v.as_deref().is_some_and(|v| !is_id(v)))
        {
            out.skipped.push(format!(
                "{rest:?}: tag `{}` is {:?}, expected a numeric Meta id",
                bad.0,
                bad.1.as_deref().unwrap_or_default()
            ));
            continue;
        }
        out.members.push(Member {
            member,
            store,
            phone_number_id: phone,
            waba_id: waba,
        });
    }
    out
}

/// Lists a group's members in its store.
///
/// # Errors
/// The store's error: [`StoreError::Unavailable`] means try again later (keep the last list).
pub async fn members(group: &GroupConfig, state_dir: &Path) -> Result<Found, StoreError> {
    match &group.discover {
        DiscoverConfig::File { path, key_prefix } => {
            let path = path
                .clone()
                .unwrap_or_else(|| state_dir.join(crate::store::file::DEFAULT_FILE));
            let file = crate::store::file::FileStore::new(path.clone(), String::new()).read()?;
            let found = file
                .secrets
                .keys()
                .filter_map(|k| k.strip_prefix(key_prefix.as_str()).map(|rest| (k, rest)))
                .map(|(k, rest)| {
                    let store = StoreConfig::File {
                        path: Some(path.clone()),
                        key: Some(k.clone()),
                    };
                    (rest.to_string(), store, Vec::new())
                });
            Ok(collect(&group.name, found))
        }
        DiscoverConfig::Aws {
            name_prefix,
            tag_key,
            tag_value,
            region,
            endpoint,
            json_key,
        } => {
            let listed = crate::store::aws::AwsStore::list(
                region.as_deref(),
                endpoint.as_deref(),
                name_prefix.as_deref(),
                tag_key.as_deref().map(|k| (k, tag_value.as_deref())),
            )
            .await?;
            let prefix = name_prefix.as_deref().unwrap_or("");
            let found = listed.into_iter().map(|l| {
                let rest = l.name.strip_prefix(prefix).unwrap_or(&l.name).to_string();
                let store = StoreConfig::Aws {
                    secret_id: l.name,
                    region: region.clone(),
                    endpoint: endpoint.clone(),
                    json_key: json_key.clone(),
                };
                (rest, store, l.tags)
            });
            Ok(collect(&group.name, found))
        }
    }
}

/// The group's members as tokens, from its template (pure).
pub fn expand(group: &GroupConfig, members: &[Member]) -> Vec<TokenConfig> {
    members
        .iter()
        .map(|m| {
            let name = token_name(&group.name, &m.member);
            let mut t = group.template.clone();
            t.targets = group
                .template
                .targets
                .iter()
                .map(|target| target.for_member(&name, &m.member))
                .collect();
            t.name = name;
            t.store = m.store.clone();
            t.phone_number_id = m.phone_number_id.clone();
            t.waba_id = m.waba_id.clone();
            t
        })
        .collect()
}

/// The last good member list of each group, kept in `groups/<group>.json`.
#[derive(Debug, Clone)]
pub struct GroupLog {
    dir: PathBuf,
}

impl GroupLog {
    /// The log under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        GroupLog {
            dir: state_dir.join("groups"),
        }
    }

    /// The last list saved for `group` (none when never listed or unreadable).
    pub fn load(&self, group: &str) -> Option<Vec<Member>> {
        let bytes = std::fs::read(self.dir.join(format!("{group}.json"))).ok()?;
        let members: Vec<Member> = serde_json::from_slice(&bytes).ok()?;
        // A list saved before names starting with `-` were refused must not bring them back.
        Some(
            members
                .into_iter()
                .filter(|m| member_name(&m.member).as_deref() == Ok(m.member.as_str()))
                .collect(),
        )
    }

    /// Saves `members` as the last good list of `group`.
    ///
    /// # Errors
    /// A failed write.
    pub fn save(&self, group: &str, members: &[Member]) -> std::io::Result<()> {
        crate::fsutil::create_private_dir(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(members).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&self.dir.join(format!("{group}.json")), &bytes, 0o600)
    }
}

/// The outcome of listing every group once.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Members per group (the fresh list, or the last good one when listing failed).
    pub members: BTreeMap<String, Vec<Member>>,
    /// Per group, why it could not be listed this time (its last good list is used).
    pub failed: BTreeMap<String, String>,
    /// Secrets left out, and members whose name a `[[token]]` already uses.
    pub skipped: Vec<String>,
    /// Do not save the lists (`check` and `doctor` write nothing: run as another user, they
    /// would leave files the daemon cannot write). The last good list is still read.
    pub read_only: bool,
}

/// Lists one group, saving a good list and falling back to the last one when the store
/// cannot be listed.
async fn refresh_group(group: &GroupConfig, state_dir: &Path, out: &mut Discovery) {
    let log = GroupLog::new(state_dir);
    match members(group, state_dir).await {
        Ok(found) => {
            if out.read_only {
                // Nothing written: the daemon's next listing saves it.
            } else if let Err(e) = log.save(&group.name, &found.members) {
                tracing::warn!(group = %group.name, error = %e, "cannot save the group's member list");
            }
            out.skipped.extend(
                found
                    .skipped
                    .into_iter()
                    .map(|s| format!("group {}: {s}", group.name)),
            );
            out.failed.remove(&group.name);
            out.members.insert(group.name.clone(), found.members);
        }
        Err(e) => {
            out.failed.insert(group.name.clone(), e.to_string());
            if !out.members.contains_key(&group.name) {
                out.members.insert(
                    group.name.clone(),
                    log.load(&group.name).unwrap_or_default(),
                );
            }
        }
    }
}

/// Replaces `cfg.tokens` by the `[[token]]`s (`statics`) followed by every group's members. A
/// member whose name a `[[token]]` (or an earlier group) already uses is left out.
pub fn apply(cfg: &mut Config, statics: &[TokenConfig], d: &mut Discovery) {
    let mut tokens = statics.to_vec();
    let mut names: HashSet<String> = statics.iter().map(|t| t.name.clone()).collect();
    for g in &cfg.groups {
        let Some(members) = d.members.get(&g.name) else {
            continue;
        };
        for t in expand(g, members) {
            if names.insert(t.name.clone()) {
                tokens.push(t);
            } else {
                d.skipped.push(format!(
                    "group {}: token {:?} is already configured; the [[token]] entry wins",
                    g.name, t.name
                ));
            }
        }
    }
    cfg.tokens = tokens;
}

/// Lists every group again (or only `only`) and rebuilds `cfg.tokens` from the `[[token]]`s
/// (`statics`) and every group's members, warning about groups that could not be listed and
/// secrets left out. Shared by the commands and the daemon, which keeps `d` between runs.
pub async fn refresh(
    cfg: &mut Config,
    statics: &[TokenConfig],
    d: &mut Discovery,
    only: Option<&str>,
) {
    d.skipped.clear();
    for g in cfg
        .groups
        .iter()
        .filter(|g| only.is_none_or(|o| o == g.name))
    {
        refresh_group(g, &cfg.state_dir, d).await;
        if let Some(e) = d.failed.get(&g.name) {
            tracing::warn!(group = %g.name, error = %e, "cannot list the group's tokens; checking its last known members");
        }
    }
    apply(cfg, statics, d);
    for s in &d.skipped {
        tracing::warn!("{s}");
    }
}

/// Lists every group and adds its members to `cfg.tokens` (the commands other than `run`);
/// with `read_only`, the lists found are not saved (`check`, `doctor`).
pub async fn expand_config(cfg: &mut Config, read_only: bool) -> Discovery {
    let mut d = Discovery {
        read_only,
        ..Discovery::default()
    };
    let statics = cfg.tokens.clone();
    refresh(cfg, &statics, &mut d, None).await;
    d
}

/// Adds every group's members as their last listing found them (no network: `status`).
pub fn expand_offline(cfg: &mut Config) {
    let mut d = Discovery::default();
    let log = GroupLog::new(&cfg.state_dir);
    for g in &cfg.groups {
        d.members
            .insert(g.name.clone(), log.load(&g.name).unwrap_or_default());
    }
    let statics = cfg.tokens.clone();
    apply(cfg, &statics, &mut d);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(name: &str) -> StoreConfig {
        StoreConfig::Aws {
            secret_id: name.into(),
            region: None,
            endpoint: None,
            json_key: None,
        }
    }

    #[test]
    fn member_names_are_made_safe_and_bad_ones_left_out_with_a_reason() {
        assert_eq!(member_name("acme").unwrap(), "acme");
        assert_eq!(member_name("eu/acme co").unwrap(), "eu.acme_co");
        assert!(member_name("").is_err());
        assert!(member_name("/").is_err());
        let found = collect(
            "customers",
            [
                ("b".to_string(), aws("p/b"), vec![]),
                ("a b".to_string(), aws("p/a b"), vec![]),
                ("a_b".to_string(), aws("p/a_b"), vec![]),
                ("x".repeat(80), aws("long"), vec![]),
                (
                    "c".to_string(),
                    aws("p/c"),
                    vec![(TAG_PHONE.into(), "+1 555".into())],
                ),
                (
                    "d".to_string(),
                    aws("p/d"),
                    vec![(TAG_PHONE.into(), "106540352242922".into())],
                ),
            ],
        );
        let names: Vec<&str> = found.members.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["a_b", "b", "d"], "{found:?}");
        assert_eq!(
            found.members[2].phone_number_id.as_deref(),
            Some("106540352242922")
        );
        assert_eq!(found.skipped.len(), 3, "{:?}", found.skipped);
        assert!(
            found
                .skipped
                .iter()
                .any(|s| s.contains("already has the member name \"a_b\""))
        );
        assert!(found.skipped.iter().any(|s| s.contains("longer than 64")));
        assert!(found.skipped.iter().any(|s| s.contains("+1 555")));
    }

    /// Issue 14, point 22: `cust---force` under the prefix `cust-` ran `reload.sh --force`.
    #[test]
    fn member_names_starting_with_a_dash_are_left_out() {
        assert!(member_name("--force").is_err());
        assert!(member_name("-x").is_err());
        assert!(member_name("a-b").is_ok());
        let found = collect(
            "cust",
            [
                ("--force".to_string(), aws("cust---force"), vec![]),
                ("ok".to_string(), aws("cust-ok"), vec![]),
            ],
        );
        let names: Vec<&str> = found.members.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["ok"]);
        assert!(
            found
                .skipped
                .iter()
                .any(|s| s.contains("must not start with `-`")),
            "{:?}",
            found.skipped
        );
        // A last good list written before the rule does not bring the name back.
        let dir = tempfile::tempdir().unwrap();
        let log = GroupLog::new(dir.path());
        let bad = Member {
            member: "--force".into(),
            store: aws("cust---force"),
            phone_number_id: None,
            waba_id: None,
        };
        log.save("cust", &[bad, found.members[0].clone()]).unwrap();
        let names: Vec<String> = log
            .load("cust")
            .unwrap()
            .into_iter()
            .map(|m| m.member)
            .collect();
        assert_eq!(names, ["ok"]);
    }

    #[test]
    fn members_inherit_the_template_with_their_names_in_the_targets() {
        let cfg = crate::config::parse(
            Path::new("t.toml"),
            r#"
[meta]
app_id = "1"
app_secret = { env = "S" }

[[token]]
name = "customers.acme"

[[group]]
name = "customers"
discover = { kind = "aws", name_prefix = "wa/", region = "eu-west-1" }
thresholds = ["3d"]
source = "refresh"

[[group.target]]
name = "env"
kind = "dotenv"
path = "/srv/{member}/.env"
verify_command = ["/usr/bin/check", "{token}"]

[[group.target]]
name = "hook"
kind = "webhook"
url = "https://hooks.example.com/{member}/token"
secret = { env = "H" }
verify_url = "https://{member}.example.com/health"
"#,
        )
        .unwrap();
        let g = &cfg.groups[0];
        let members = vec![Member {
            member: "bistro".into(),
            store: aws("wa/bistro"),
            phone_number_id: Some("12".into()),
            waba_id: None,
        }];
        let t = &expand(g, &members)[0];
        assert_eq!(t.name, "customers.bistro");
        assert_eq!(t.store, aws("wa/bistro"));
        assert_eq!(t.phone_number_id.as_deref(), Some("12"));
        assert_eq!(
            t.policy.thresholds,
            vec![std::time::Duration::from_secs(3 * 86_400)]
        );
        assert_eq!(t.rotation.source, crate::config::Source::Refresh);
        match &t.targets[0].kind {
            crate::config::TargetKind::Dotenv { path, .. } => {
                assert_eq!(path, Path::new("/srv/bistro/.env"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.targets[0].verify,
            Some(crate::config::VerifyConfig::Command(vec![
                "/usr/bin/check".into(),
                "customers.bistro".into()
            ]))
        );
        match &t.targets[1].kind {
            crate::config::TargetKind::Webhook { url, .. } => {
                assert_eq!(url.as_str(), "https://hooks.example.com/bistro/token")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.targets[1].verify,
            Some(crate::config::VerifyConfig::Url(
                "https://bistro.example.com/health".parse().unwrap()
            ))
        );

        // A member whose name a [[token]] already has is left out, with a reason.
        let mut cfg2 = cfg.clone();
        let statics = cfg.tokens.clone();
        let mut d = Discovery::default();
        d.members.insert(
            "customers".into(),
            vec![
                Member {
                    member: "acme".into(),
                    store: aws("wa/acme"),
                    phone_number_id: None,
                    waba_id: None,
                },
                members[0].clone(),
            ],
        );
        apply(&mut cfg2, &statics, &mut d);
        let names: Vec<&str> = cfg2.tokens.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["customers.acme", "customers.bistro"]);
        assert_eq!(
            cfg2.tokens[0].store, cfg.tokens[0].store,
            "the [[token]] wins"
        );
        assert!(
            d.skipped[0].contains("already configured"),
            "{:?}",
            d.skipped
        );
    }
}
