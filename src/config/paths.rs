//! Checks of the paths a config names against each other and the disk, run by
//! [`load`](super::load) after the file parsed (so [`parse`](super::parse) stays free of IO).
//!
//! - The state directory must not be writable by group or others: whoever can write it can
//!   plant files where tokenwarden writes tokens.
//! - A dotenv target must not point inside the state directory, at a token store, at a secret
//!   file the config references, or at the config itself: the first check would write a
//!   `KEY=token` line into it and corrupt it. Two dotenv targets on the same file and key would
//!   fight over it. Paths are compared after resolving symlinks where they exist, so a second
//!   name for the same file is caught too.
//!
//! Each problem is a [`Diagnostic`] at the value's line in the file.

use std::path::{Component, Path, PathBuf};

use super::diag::{Diagnostic, SourceMap};
use super::{Config, DiscoverConfig, SecretRef, StoreConfig, TargetKind, TokenConfig};

/// Every problem of `cfg`'s paths; `text` is the config's text, to place them.
pub(super) fn check(map: &SourceMap<'_>, text: &str, cfg: &Config) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let state_at = key_offset(text, "state_dir");
    if let Err(problem) = crate::fsutil::check_private_dir(&cfg.state_dir) {
        diags.push(map.at(state_at, "state_dir", problem));
    }
    let state_dir = resolve(&cfg.state_dir);

    // Files a target must never be: (resolved path, what it is).
    let mut protected: Vec<(PathBuf, String)> =
        vec![(resolve(&cfg.path), "this config file".to_string())];
    for f in cfg.secret_fields() {
        match f.reference {
            SecretRef::File(p) => {
                protected.push((resolve(p), format!("the secret file of `{}`", f.field)))
            }
            SecretRef::Credential(name) => {
                if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
                    protected.push((
                        resolve(&Path::new(&dir).join(name)),
                        format!("the systemd credential of `{}`", f.field),
                    ));
                }
            }
            SecretRef::Env(_) => {}
        }
    }
    let tokens = cfg
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("token[{i}]"), t))
        .chain(
            cfg.groups
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("group[{i}]"), &g.template)),
        )
        .collect::<Vec<(String, &TokenConfig)>>();
    for (prefix, t) in &tokens {
        if let StoreConfig::File { path: Some(p), .. } = &t.store {
            protected.push((resolve(p), format!("the token store of `{prefix}`")));
        }
    }
    for (i, g) in cfg.groups.iter().enumerate() {
        if let DiscoverConfig::File { path: Some(p), .. } = &g.discover {
            protected.push((resolve(p), format!("the token store of `group[{i}]`")));
        }
    }

    // (resolved path, key) -> the field that claimed it first.
    let mut seen: Vec<(PathBuf, &str, String)> = Vec::new();
    // How many times each written path was met so far, to place a repeated one at its own line.
    let mut met: Vec<(String, usize)> = Vec::new();
    for (prefix, t) in &tokens {
        for (j, target) in t.targets.iter().enumerate() {
            let TargetKind::Dotenv { path, key, .. } = &target.kind else {
                continue;
            };
            let field = format!("{prefix}.target[{j}].path");
            let written = path.to_string_lossy().to_string();
            let nth = match met.iter_mut().find(|(p, _)| *p == written) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    met.push((written.clone(), 0));
                    0
                }
            };
            let at = value_offset(text, &written, nth);
            let resolved = resolve(path);
            let shown = path.display();
            if resolved.starts_with(&state_dir) {
                diags.push(map.at(at, &field, format!(
                    "`{shown}` is inside the state directory `{}`, which holds tokenwarden's own files; point the target at the application's env file",
                    cfg.state_dir.display()
                )));
            } else if let Some((_, what)) = protected.iter().find(|(p, _)| *p == resolved) {
                diags.push(map.at(at, &field, format!(
                    "`{shown}` is {what}: writing a `{key}=` line into it would corrupt it; point the target at the application's env file"
                )));
            }
            match seen.iter().find(|(p, k, _)| *p == resolved && *k == key) {
                Some((_, _, first)) => diags.push(map.at(at, &field, format!(
                    "`{shown}` and key `{key}` are already the target of `{first}`: two targets would overwrite each other's token; keep one, or use another key"
                ))),
                None => seen.push((resolved, key, field)),
            }
        }
    }
    diags
}

/// `path` with symlinks resolved as far as it exists (a file not created yet is resolved
/// through its directory), and `.` and `..` removed.
fn resolve(path: &Path) -> PathBuf {
    let lexical = lexical(path);
    if let Ok(p) = std::fs::canonicalize(&lexical) {
        return p;
    }
    match (lexical.parent(), lexical.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(lexical),
        _ => lexical,
    }
}

/// `.` and `..` removed without looking at the disk.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where the top-level `key = ...` is written (0 when it is not, as for a default).
fn key_offset(text: &str, key: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return offset + (line.len() - trimmed.len());
        }
        offset += line.len();
    }
    0
}

/// Where the `nth` (from 0) `path = "value"` is written: the quoted value on a line that
/// starts with `path`, else any occurrence of it (an inline table), else 0.
fn value_offset(text: &str, value: &str, nth: usize) -> usize {
    let quoted = format!("\"{value}\"");
    let on_path_line = |i: &usize| {
        let line_start = text[..*i].rfind('\n').map_or(0, |n| n + 1);
        text[line_start..].trim_start().starts_with("path")
    };
    let found: Vec<usize> = text.match_indices(&quoted).map(|(i, _)| i).collect();
    found
        .iter()
        .copied()
        .filter(on_path_line)
        .nth(nth)
        .or_else(|| found.get(nth).copied())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_removes_dots_and_follows_links_of_existing_parents() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let canonical = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            resolve(&dir.path().join("link/./x/../.env")),
            canonical.join(".env")
        );
        assert_eq!(lexical(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
    }

    #[test]
    fn offsets_point_at_the_key_and_the_nth_value() {
        let text = "# c\nstate_dir = \"/s\"\n[meta]\nstate_dir = 1\n";
        assert_eq!(key_offset(text, "state_dir"), 4);
        assert_eq!(key_offset("[meta]\nstate_dir = 1", "state_dir"), 0);
        let text = "store = { path = \"/x\" }\npath = \"/x\"\npath = \"/x\"\n";
        assert_eq!(value_offset(text, "/x", 0), 31);
        assert_eq!(value_offset(text, "/x", 1), 43);
    }
}
