//! Collecting every configuration error in one pass, each with file, line, column and field.
//!
//! serde stops at the first error. To report them all, [`deserialize_all`] parses the document
//! into spanned TOML values, deserializes, and when that fails records the error, removes the
//! offending key (or the whole `[[array]]` entry for a missing field) and tries again. The
//! removal never changes what a *valid* config means: it only lets later mistakes be seen.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// One problem in a configuration file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted path of the field, such as `token[1].phone_number_id` (empty for the document).
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "`{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Turns byte offsets into line and column for one source text.
#[derive(Debug, Clone)]
pub struct SourceMap<'a> {
    file: &'a Path,
    text: &'a str,
}

impl<'a> SourceMap<'a> {
    /// A map over `text`, which was read from `file`.
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        SourceMap { file, text }
    }

    /// A diagnostic at byte `offset`.
    pub fn at(
        &self,
        offset: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Deserializes `text` into `T`, reporting every error it can find rather than the first.
///
/// Returns the value read from what is left once the bad parts are removed (so the caller can
/// still check the rest of it), and every diagnostic, sorted by position. The value is `None`
/// when nothing usable is left.
pub fn deserialize_all<T: DeserializeOwned>(
    map: &SourceMap<'_>,
    text: &str,
) -> (Option<T>, Vec<Diagnostic>) {
    let (mut root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // A syntax error makes everything after it unreliable: report the syntax errors alone.
        let diags = syntax
            .iter()
            .map(|e| {
                map.at(
                    e.span().map_or(0, |s| s.start),
                    "",
                    e.message().trim().to_string(),
                )
            })
            .collect();
        return (None, diags);
    }
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut removed_names: Vec<String> = Vec::new();
    // Each round removes at least one key or entry, so this ends; the bound is a safety net.
    let mut value = None;
    for _ in 0..256 {
        match T::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(v) => {
                value = Some(v);
                break;
            }
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim().to_string();
                let removed = remove_at(root.get_mut(), &span, "");
                // Removing a bad key can make serde report it as missing next: already said.
                let echo = removed_names
                    .iter()
                    .any(|n| message == format!("missing field `{n}`"));
                if !echo {
                    diags.push(map.at(span.start, removed.clone().unwrap_or_default(), message));
                }
                match removed {
                    Some(path) => removed_names.push(last_segment(&path).to_string()),
                    None => break,
                }
            }
        }
    }
    diags.sort_by_key(|d| (d.line, d.column));
    diags.dedup();
    (value, diags)
}

/// Removes the innermost key whose key or value span contains `span`, or the array-of-tables
/// entry whose span equals it (a missing field is reported on the whole entry). Returns the
/// dotted path of what was removed.
fn remove_at(table: &mut DeTable<'_>, span: &Range<usize>, prefix: &str) -> Option<String> {
    let keys: Vec<Spanned<toml::de::DeString<'_>>> = table.keys().cloned().collect();
    for key in keys {
        let path = join(prefix, key.get_ref());
        let value = table.get_mut(&key).expect("key listed above");
        let vspan = value.span();
        if let Some(inner) = remove_in_value(value.get_mut(), span, &path) {
            return Some(inner);
        }
        if contains(&key.span(), span) || (contains(&vspan, span) && !vspan.is_empty()) {
            table.remove(&key);
            return Some(path);
        }
    }
    None
}

fn remove_in_value(value: &mut DeValue<'_>, span: &Range<usize>, path: &str) -> Option<String> {
    match value {
        DeValue::Table(t) => remove_at(t, span, path),
        DeValue::Array(items) => {
            let mut drop_index = None;
            for (i, item) in items.iter_mut().enumerate() {
                let item_path = format!("{path}[{i}]");
                let item_span = item.span();
                if let DeValue::Table(t) = item.get_mut() {
                    if let Some(found) = remove_at(t, span, &item_path) {
                        return Some(found);
                    }
                    if item_span == *span {
                        drop_index = Some(i);
                        break;
                    }
                }
            }
            let i = drop_index?;
            let mut rebuilt = DeArray::new();
            for (j, v) in items.iter().enumerate() {
                if j != i {
                    rebuilt.push(v.clone());
                }
            }
            *items = rebuilt;
            Some(format!("{path}[{i}]"))
        }
        _ => None,
    }
}

fn last_segment(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    tail.split('[').next().unwrap_or(tail)
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && !(inner.is_empty() && outer.is_empty())
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}
