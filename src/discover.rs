//! Token groups: tokens found in a store on each run rather than listed one by one.
//!
//! A `[[group]]` names where its members live (the entries of a file store under a key prefix,
//! or the Secrets Manager secrets under a name prefix and/or with a tag). [`members`] asks the
//! store (the IO); [`expand`] turns the members into ordinary [`TokenConfig`]s from the group's
//! template (pure): the token's name is `<group>.<member>`, the store points at the member's
//! secret, and `{token}` / `{member}` in the targets are filled in. Per-member Meta ids come
//! from the secret's tags [`TAG_PHONE`], [`TAG_WABA`] and, for a Tech Provider's business
//! tokens (one customer each), [`TAG_CLIENT_BUSINESS`]. Only Secrets Manager has tags: the
//! members of a file store carry no ids.
//!
//! The last good list of each group is kept in `groups/<group>.json` in the state directory, so
//! a store that cannot be listed this run (or at start) keeps the known members checked instead
//! of silently dropping them. A list file that cannot be parsed is reported (logged, and named
//! in the group's listing failure) and treated as no list.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Config, DiscoverConfig, GroupConfig, StoreConfig, TokenConfig};
use crate::state::{Layout, RecordStore, StateError};
use crate::store::StoreError;

// The tag names live in `config` (what a member's token is made of), below both this module
// and the pure core that names them in its verdicts.
pub use crate::config::{TAG_CLIENT_BUSINESS, TAG_PHONE, TAG_WABA};

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
    /// From the [`TAG_CLIENT_BUSINESS`] tag. Lists saved before the tag existed have none.
    #[serde(default)]
    pub client_business_id: Option<String>,
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
        let (phone, waba, business) = (tag(TAG_PHONE), tag(TAG_WABA), tag(TAG_CLIENT_BUSINESS));
        if let Some(bad) = [
            (TAG_PHONE, &phone),
            (TAG_WABA, &waba),
            (TAG_CLIENT_BUSINESS, &business),
        ]
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
            client_business_id: business,
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
            // The group keeps the partner token; the customer is the member's own.
            if let Some(b) = &mut t.business {
                b.client_business_id = m.client_business_id.clone();
            }
            t
        })
        .collect()
}

/// Directory inside the state directory with one last good list per group.
pub const GROUPS_DIR: &str = crate::state::GROUPS_DIR;

/// The last good member list of each group, kept in `groups/<group>.json` through the state
/// directory's [`RecordStore`].
#[derive(Debug, Clone)]
pub struct GroupLog {
    records: RecordStore,
}

impl GroupLog {
    /// The log under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        GroupLog {
            records: RecordStore::new(state_dir.join(GROUPS_DIR), Layout::Pretty)
                .aside_loses("the group's members are then those its next listing finds"),
        }
    }

    /// The last list saved for `group`; `None` when it was never listed.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] when the file does not parse, [`StateError::Io`] when it cannot
    /// be read.
    pub fn load(&self, group: &str) -> Result<Option<Vec<Member>>, StateError> {
        let Some(members) = self.records.load::<Vec<Member>>(group)? else {
            return Ok(None);
        };
        // A list saved before names starting with `-` were refused must not bring them back.
        Ok(Some(
            members
                .into_iter()
                .filter(|m| member_name(&m.member).as_deref() == Ok(m.member.as_str()))
                .collect(),
        ))
    }

    /// The last list saved for `group`, for use when the store cannot be listed: empty when
    /// there is none, and when the file is corrupt or unreadable, which is logged and
    /// returned as the second value (a corrupt list is treated as no list, never guessed at).
    pub fn last_good(&self, group: &str) -> (Vec<Member>, Option<StateError>) {
        match self.load(group) {
            Ok(members) => (members.unwrap_or_default(), None),
            Err(e) => {
                tracing::error!(group = %group, error = %e, "the group's last good member list cannot be read; treated as no list");
                (Vec::new(), Some(e))
            }
        }
    }

    /// Saves `members` as the last good list of `group`.
    ///
    /// # Errors
    /// A failed write.
    pub fn save(&self, group: &str, members: &[Member]) -> Result<(), StateError> {
        self.records.save(group, members)
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
            let mut why = e.to_string();
            if !out.members.contains_key(&group.name) {
                let (members, unusable) = log.last_good(&group.name);
                if let Some(u) = unusable {
                    why.push_str(&format!("; and its last good list is unusable: {u}"));
                }
                out.members.insert(group.name.clone(), members);
            }
            out.failed.insert(group.name.clone(), why);
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
        d.members.insert(g.name.clone(), log.last_good(&g.name).0);
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
            client_business_id: None,
        };
        log.save("cust", &[bad, found.members[0].clone()]).unwrap();
        let names: Vec<String> = log
            .load("cust")
            .unwrap()
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
            client_business_id: None,
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
                    client_business_id: None,
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

    /// Each customer of a group of Tech Provider business tokens has its own business id: it
    /// is read from the secret's tag (checked like the other ids) and put into the member's
    /// `business`, beside the group's partner token. A list saved before the tag existed
    /// still loads.
    #[test]
    fn a_members_client_business_id_comes_from_its_tag_into_its_business() {
        let found = collect(
            "customers",
            [
                (
                    "shop".to_string(),
                    aws("customers/shop"),
                    vec![
                        (TAG_WABA.into(), "102290129340398".into()),
                        (TAG_CLIENT_BUSINESS.into(), "506914307656634".into()),
                    ],
                ),
                (
                    "bad".to_string(),
                    aws("customers/bad"),
                    vec![(TAG_CLIENT_BUSINESS.into(), "biz-506".into())],
                ),
                ("untagged".to_string(), aws("customers/untagged"), vec![]),
            ],
        );
        let names: Vec<&str> = found.members.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["shop", "untagged"], "{found:?}");
        assert_eq!(found.skipped.len(), 1, "{:?}", found.skipped);
        assert!(
            found.skipped[0].contains("tag `tokenwarden:client_business_id` is \"biz-506\""),
            "{:?}",
            found.skipped
        );
        assert_eq!(
            found.members[0].client_business_id.as_deref(),
            Some("506914307656634")
        );

        let cfg = crate::config::parse(
            Path::new("t.toml"),
            r#"
[meta]
app_id = "1"
app_secret = { env = "S" }

[[group]]
name = "customers"
kind = "whatsapp_business"
source = "refresh"
business = { partner_token = { env = "P" } }
discover = { kind = "aws", name_prefix = "customers/" }
"#,
        )
        .unwrap();
        let tokens = expand(&cfg.groups[0], &found.members);
        let b = tokens[0].business.as_ref().unwrap();
        assert_eq!(b.client_business_id.as_deref(), Some("506914307656634"));
        assert_eq!(b.partner_token, crate::config::SecretRef::Env("P".into()));
        assert_eq!(tokens[0].waba_id.as_deref(), Some("102290129340398"));
        let b = tokens[1].business.as_ref().unwrap();
        assert_eq!(b.client_business_id, None, "never another member's");
        assert_eq!(tokens[1].waba_id, None);

        // A last good list saved before the tag existed.
        let dir = tempfile::tempdir().unwrap();
        let log = GroupLog::new(dir.path());
        std::fs::create_dir_all(dir.path().join(GROUPS_DIR)).unwrap();
        std::fs::write(
            dir.path().join(GROUPS_DIR).join("customers.json"),
            r#"[{"member":"shop","store":{"kind":"aws","secret_id":"customers/shop"},"phone_number_id":null,"waba_id":"2"}]"#,
        )
        .unwrap();
        let old = log.load("customers").unwrap().unwrap();
        assert_eq!(old[0].client_business_id, None);
        assert_eq!(old[0].waba_id.as_deref(), Some("2"));
    }

    /// A corrupt `groups/<group>.json` used to be read as no list without a word: the
    /// group's members silently vanished while its store could not be listed. It is now
    /// reported (in the group's listing failure, with the file and position) and still
    /// treated as no list; a good list keeps being used.
    #[tokio::test]
    async fn a_corrupt_last_good_list_is_reported_and_treated_as_no_list() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let cfg = crate::config::parse(
            Path::new("t.toml"),
            &format!(
                r#"
[meta]
app_id = "1"
app_secret = {{ env = "S" }}

[[group]]
name = "customers"
discover = {{ kind = "file", path = "{}", key_prefix = "wa/" }}
"#,
                dir.path().join("missing-store.json").display()
            ),
        )
        .unwrap();
        let g = &cfg.groups[0];
        let log = GroupLog::new(&state);
        let bistro = Member {
            member: "bistro".into(),
            store: aws("wa/bistro"),
            phone_number_id: None,
            waba_id: None,
            client_business_id: None,
        };
        // A good list is used while the store cannot be listed.
        log.save(&g.name, std::slice::from_ref(&bistro)).unwrap();
        let mut d = Discovery::default();
        refresh_group(g, &state, &mut d).await;
        assert_eq!(d.members[&g.name], vec![bistro]);
        assert!(!d.failed[&g.name].contains("last good list"), "{d:?}");

        let file = state.join(GROUPS_DIR).join("customers.json");
        std::fs::write(&file, "[{\"member\":").unwrap();
        let mut d = Discovery::default();
        refresh_group(g, &state, &mut d).await;
        assert_eq!(d.members[&g.name], Vec::<Member>::new(), "no list");
        let why = &d.failed[&g.name];
        assert!(why.contains("last good list is unusable"), "{why}");
        assert!(why.contains(&file.display().to_string()), "{why}");
        assert!(why.contains("is corrupt (line 1 column"), "{why}");
        assert!(matches!(log.load(&g.name), Err(StateError::Corrupt { .. })));
        assert_eq!(log.last_good(&g.name).0, Vec::<Member>::new());
        // The file is left for a person to look at.
        assert!(file.exists());
    }
}
