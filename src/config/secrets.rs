//! Every secret reference a config holds, with its field, and the reading of them all that
//! `config check` does.
//!
//! [`Config::secret_fields`] is the one list of them: `meta.app_secret`, the SMTP password, each
//! receiver's routing key or webhook URL, each mint's `admin_token` and each webhook target's
//! `secret`, for the `[[token]]`s and the `[[group]]` templates (a group's members share
//! their template's references). The path checks use it to protect secret files from dotenv
//! targets, and [`check_secrets`] resolves each one, so the unit's `ExecStartPre=... config
//! check` fails where the daemon would, not at the first rotation or email.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::diag::{Diagnostic, SourceMap};
use super::{Config, EmailConfig, SecretRef, Source, TargetKind, TokenConfig};

/// One secret reference of a config and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretField<'a> {
    /// The dotted field, as diagnostics name it: `token[0].mint.admin_token`.
    pub field: String,
    /// The reference.
    pub reference: &'a SecretRef,
}

impl Config {
    /// Every secret reference the config holds, in file order of sections. Meant for the
    /// config as loaded: once groups are expanded, their members (clones of the template's
    /// references) follow the `[[token]]`s and would be listed again under `token[..]`.
    pub fn secret_fields(&self) -> Vec<SecretField<'_>> {
        let mut out = vec![SecretField {
            field: "meta.app_secret".into(),
            reference: &self.meta.app_secret,
        }];
        match &self.email {
            Some(EmailConfig::Smtp {
                password: Some(p), ..
            }) => out.push(SecretField {
                field: "email.password".into(),
                reference: p,
            }),
            Some(EmailConfig::Smtp { password: None, .. } | EmailConfig::Folder { .. }) | None => {}
        }
        for (i, r) in self.receivers.iter().enumerate() {
            for (name, reference) in r.secret_refs() {
                out.push(SecretField {
                    field: format!("receiver[{i}].{name}"),
                    reference,
                });
            }
        }
        let tokens = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("token[{i}]"), t));
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("group[{i}]"), &g.template));
        for (prefix, t) in tokens.chain(groups) {
            token_fields(&prefix, t, &mut out);
        }
        out
    }
}

/// The references of one token (or group template) under `prefix`.
fn token_fields<'a>(prefix: &str, t: &'a TokenConfig, out: &mut Vec<SecretField<'a>>) {
    if let Some(b) = &t.business {
        out.push(SecretField {
            field: format!("{prefix}.business.partner_token"),
            reference: &b.partner_token,
        });
    }
    if let Some(user_token) = t.page.as_ref().and_then(|p| p.user_token.as_ref()) {
        out.push(SecretField {
            field: format!("{prefix}.page.user_token"),
            reference: user_token,
        });
    }
    if let Some(app) = &t.app {
        out.push(SecretField {
            field: format!("{prefix}.app.app_secret"),
            reference: &app.app_secret,
        });
    }
    match &t.rotation.source {
        Source::Mint(m) => out.push(SecretField {
            field: format!("{prefix}.mint.admin_token"),
            reference: &m.admin_token,
        }),
        Source::Staged | Source::Refresh => {}
    }
    for (j, target) in t.targets.iter().enumerate() {
        // Every kind named, so a new kind with a secret cannot be forgotten here.
        match &target.kind {
            TargetKind::Webhook { secret, .. } => out.push(SecretField {
                field: format!("{prefix}.target[{j}].secret"),
                reference: secret,
            }),
            TargetKind::GithubActionsSecret { api, .. }
            | TargetKind::HerokuConfigVar { api, .. }
            | TargetKind::VercelEnv { api, .. }
            | TargetKind::RenderEnvVar { api, .. } => out.push(SecretField {
                field: format!("{prefix}.target[{j}].api_token"),
                reference: &api.token,
            }),
            TargetKind::Dotenv { .. }
            | TargetKind::AwsSecret { .. }
            | TargetKind::Exec { .. }
            | TargetKind::SsmParameter { .. }
            | TargetKind::KubernetesSecret { .. } => {}
        }
    }
}

/// Reads every secret the config references (the values are dropped at once) and returns a
/// diagnostic, at the reference's line in `text`, for each one that cannot be read.
pub fn check_secrets(cfg: &Config, text: &str) -> Vec<Diagnostic> {
    let map = SourceMap::new(&cfg.path, text);
    let tree = DeTable::parse(text).ok();
    cfg.secret_fields()
        .into_iter()
        .filter_map(|f| {
            let e = f.reference.resolve().err()?;
            let at = tree
                .as_ref()
                .and_then(|t| span_of(t.get_ref(), &f.field))
                .map_or(0, |s| s.start);
            Some(map.at(at, f.field, e.to_string()))
        })
        .collect()
}

/// Where the value of a dotted field (`token[1].target[0].secret`) is written, if it is.
fn span_of(root: &DeTable<'_>, field: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut segments = field.split('.').peekable();
    while let Some(segment) = segments.next() {
        let (key, index) = match segment.split_once('[') {
            Some((key, rest)) => (key, Some(rest.strip_suffix(']')?.parse::<usize>().ok()?)),
            None => (segment, None),
        };
        let mut value = table.get(key)?;
        if let Some(i) = index {
            let DeValue::Array(items) = value.get_ref() else {
                return None;
            };
            value = items.get(i)?;
        }
        if segments.peek().is_none() {
            return Some(value.span());
        }
        let DeValue::Table(inner) = value.get_ref() else {
            return None;
        };
        table = inner;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const TEXT: &str = r#"[meta]
app_id = "1"
app_secret = { env = "TW_SECRETS_TEST_APP" }

[email]
kind = "smtp"
host = "127.0.0.1"
tls = "none"
username = "u"
password = { env = "TW_SECRETS_TEST_SMTP" }
from = "tw@example.com"
to = ["oncall@example.com"]

[[token]]
name = "a"
source = "mint"
mint = { system_user_id = "2", admin_token = { file = "/nonexistent/admin" } }

[[token.target]]
name = "hook"
kind = "webhook"
url = "https://hooks.example.com/t"
secret = { env = "TW_SECRETS_TEST_HOOK" }

[[group]]
name = "g"
discover = { kind = "file", key_prefix = "g/" }
source = "mint"
mint = { system_user_id = "3", admin_token = { env = "TW_SECRETS_TEST_GROUP" } }
"#;

    #[test]
    fn every_reference_is_listed_with_its_field_and_found_at_its_line() {
        let cfg = super::super::parse(Path::new("c.toml"), TEXT).expect("valid");
        let fields: Vec<String> = cfg.secret_fields().into_iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            [
                "meta.app_secret",
                "email.password",
                "token[0].mint.admin_token",
                "token[0].target[0].secret",
                "group[0].mint.admin_token",
            ]
        );
        let tree = DeTable::parse(TEXT).unwrap();
        let map = SourceMap::new(Path::new("c.toml"), TEXT);
        let line = |field: &str| {
            map.at(span_of(tree.get_ref(), field).unwrap().start, "", "")
                .line
        };
        assert_eq!(line("meta.app_secret"), 3);
        assert_eq!(line("email.password"), 10);
        assert_eq!(line("token[0].mint.admin_token"), 17);
        assert_eq!(line("token[0].target[0].secret"), 23);
        assert_eq!(line("group[0].mint.admin_token"), 29);
        assert!(span_of(tree.get_ref(), "token[1].mint.admin_token").is_none());
    }
}
