//! The checks behind the fuzz targets in `fuzz/` (cargo fuzz), kept in the library so the
//! targets and the corpus replay in `tests/integration/fuzz_corpus.rs` run the very same code.
//! Each takes the fuzzer's raw bytes and panics when a property does not hold. Not an API.
//!
//! - [`graph_response`]: every parser a Graph answer goes through ([`crate::graph::fuzz_parse`]).
//! - [`config`]: [`crate::config::parse`] returns a config, or diagnostics that say something and
//!   point into the file.
//! - [`dotenv`]: [`crate::target::dotenv::set`] refuses, or changes only the lines holding the
//!   key, and the value reads back.

use std::path::Path;

use crate::config::Diagnostic;
use crate::target::dotenv::{self, DotenvError};

/// `[status: 2 bytes, big-endian] body`: an answer with that HTTP status. Shorter input is a
/// body answered with 200.
pub fn graph_response(data: &[u8]) {
    let (status, body) = match data {
        [hi, lo, body @ ..] => (u16::from_be_bytes([*hi, *lo]), body),
        _ => (200, data),
    };
    crate::graph::fuzz_parse(status, body);
}

/// The config file's text (invalid UTF-8 replaced, as the fuzzer's bytes rarely are UTF-8).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/tokenwarden/fuzz.toml");
    match crate::config::parse(path, &text) {
        Ok(config) => {
            for token in &config.tokens {
                assert!(config.token(&token.name).is_some());
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "a refused config says why");
            let lines = text.matches('\n').count() + 1;
            for d in &diags {
                check_diagnostic(d, path, lines);
            }
            let shown = crate::config::ConfigError::Invalid(diags).to_string();
            assert!(!shown.is_empty());
        }
    }
}

fn check_diagnostic(d: &Diagnostic, path: &Path, lines: usize) {
    assert_eq!(d.file, path, "{d:?}");
    assert!(
        d.line >= 1 && d.line <= lines,
        "line outside the file: {d:?}"
    );
    assert!(d.column >= 1, "{d:?}");
    assert!(
        !d.message.trim().is_empty(),
        "a diagnostic without words: {d:?}"
    );
    assert!(d.to_string().contains(&d.message));
}

/// The keys the dotenv input chooses from (by its first byte): the default, short and odd
/// names, and names that are not variable names (which must be refused).
const KEYS: &[&str] = &[
    dotenv::DEFAULT_KEY,
    "A",
    "KEY",
    "_x1",
    "export",
    "WHATSAPP_ACCESS_TOKEN_OLD",
    "1BAD",
    "A-B",
    "",
];

/// The value used when the input holds no separator: a token as Graph issues them.
const TOKEN: &str = "EAAGfuzz0123456789abcdefXYZ";

/// The (key, value, file text) a `dotenv` fuzz input stands for (see [`dotenv`]); `None` for
/// an empty input. The parser-agreement test replays the corpus through it too.
pub fn dotenv_case(data: &[u8]) -> Option<(&'static str, String, String)> {
    let (&choice, rest) = data.split_first()?;
    let key = KEYS[usize::from(choice) % KEYS.len()];
    let (value, text) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (
            String::from_utf8_lossy(&rest[..i]).into_owned(),
            String::from_utf8_lossy(&rest[i + 1..]).into_owned(),
        ),
        None => (TOKEN.into(), String::from_utf8_lossy(rest).into_owned()),
    };
    Some((key, value, text))
}

/// `[key choice: 1 byte] value 0xFF file text` (0xFF never occurs in UTF-8, so it cannot be
/// part of either). Without 0xFF, the rest is the file and the value is a plain token.
///
/// When [`dotenv::set`] accepts: every line of the original that does not assign the key is in
/// the result unchanged (with its line ending) and in order; a changed line assigned the key,
/// keeps everything up to its `=` and its ending, and now holds the value; a missing key is
/// appended as the one new line; [`dotenv::get`] reads the value back; setting it again changes
/// nothing. Values with a line break, carriage return or NUL, empty values and keys that are not
/// variable names are always refused.
pub fn dotenv(data: &[u8]) {
    let Some((key, value, text)) = dotenv_case(data) else {
        return;
    };
    let (value, text) = (value.as_str(), text.as_str());
    let _ = dotenv::get(text, key);

    let result = dotenv::set(text, key, value);
    let key_ok = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !key_ok {
        assert!(matches!(result, Err(DotenvError::BadKey { .. })), "{key:?}");
        return;
    }
    if value.is_empty() || value.contains(['\n', '\r', '\0']) {
        assert!(
            matches!(result, Err(DotenvError::UnsafeValue { .. })),
            "a value that would break the file was not refused: {result:?}"
        );
        return;
    }
    let Ok(edited) = result else {
        return;
    };
    check_only_the_key_changed(text, key, value, &edited);
}

fn check_only_the_key_changed(text: &str, key: &str, value: &str, edited: &dotenv::Edited) {
    let out = edited.text.as_str();
    assert_eq!(edited.changed, out != text);
    let before = lines(text);
    let after = lines(out);
    assert_eq!(
        after.len(),
        before.len() + usize::from(edited.appended),
        "only an appended line may be added: {text:?} -> {out:?}"
    );
    let mut changed = 0;
    for (i, (&(content, ending), &(new_content, new_ending))) in
        before.iter().zip(&after).enumerate()
    {
        if (content, ending) == (new_content, new_ending) {
            continue;
        }
        if edited.appended && i + 1 == before.len() && ending.is_empty() {
            // The one exception: the line the key is appended after gets a line break. Its
            // bytes stay (a last line ending in a lone `\r` reads as CRLF afterwards).
            let added = format!("{new_content}{new_ending}");
            let added = added.strip_prefix(content);
            assert!(
                matches!(added, Some("\n" | "\r\n")),
                "line {}: {text:?} -> {out:?}",
                i + 1
            );
            continue;
        }
        changed += 1;
        let eq = assigns(content, key).unwrap_or_else(|| {
            panic!(
                "line {} does not assign {key:?} but changed: {text:?} -> {out:?}",
                i + 1
            )
        });
        assert!(
            new_content.starts_with(&content[..=eq]),
            "line {}: the text up to `=` changed: {text:?} -> {out:?}",
            i + 1
        );
        assert_eq!(
            ending,
            new_ending,
            "line {}: the line ending changed",
            i + 1
        );
        assert_eq!(
            dotenv::get(new_content, key).as_deref(),
            Some(value),
            "line {}: {out:?}",
            i + 1
        );
    }
    assert!(changed <= edited.occurrences);
    if edited.appended {
        assert_eq!(edited.occurrences, 0);
        let (content, _) = *after.last().expect("a line was appended");
        assert!(content.starts_with(&format!("{key}=")), "{out:?}");
        assert_eq!(dotenv::get(content, key).as_deref(), Some(value), "{out:?}");
    }
    assert_eq!(
        dotenv::get(out, key).as_deref(),
        Some(value),
        "the value does not read back: {text:?} -> {out:?}"
    );
    let again = dotenv::set(out, key, value)
        .unwrap_or_else(|e| panic!("setting the same value again was refused: {e} {out:?}"));
    assert!(
        !again.changed,
        "setting the same value again changed {out:?}"
    );
}

/// Lines as (content, ending): the ending is `\r\n`, `\n`, or empty for a last line without
/// one. A `\r` not followed by `\n` is content.
fn lines(text: &str) -> Vec<(&str, &str)> {
    text.split_inclusive('\n')
        .map(|piece| {
            let ending = if piece.ends_with("\r\n") {
                "\r\n"
            } else if piece.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            (&piece[..piece.len() - ending.len()], ending)
        })
        .collect()
}

/// Where the `=` is when `line` reads `[blanks][export blanks]KEY[blanks]=...` (written here
/// independently of the editor's own parser).
fn assigns(line: &str, key: &str) -> Option<usize> {
    let blank = |c: char| c == ' ' || c == '\t';
    let trimmed = line.trim_start_matches(blank);
    let mut candidates = vec![trimmed];
    if let Some(after) = trimmed.strip_prefix("export")
        && after.starts_with(blank)
    {
        candidates.push(after.trim_start_matches(blank));
    }
    candidates.into_iter().find_map(|c| {
        let after_key = c.strip_prefix(key)?;
        let rest = after_key.trim_start_matches(blank);
        if rest.starts_with('=') {
            return Some(line.len() - rest.len());
        }
        // Node's `dotenv` reads `KEY: value` too.
        if after_key.starts_with(':') && after_key[1..].starts_with(blank) {
            return Some(line.len() - after_key.len());
        }
        // A bare `KEY` (python-dotenv: the key without a value) becomes `KEY=value`: the text
        // is kept up to the key's last character.
        (rest.is_empty() || (rest.starts_with('#') && rest.len() < after_key.len()))
            .then(|| line.len() - after_key.len() - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_endings_exactly() {
        assert_eq!(
            lines("a\r\nb\nc\rd\n\ne"),
            vec![
                ("a", "\r\n"),
                ("b", "\n"),
                ("c\rd", "\n"),
                ("", "\n"),
                ("e", "")
            ]
        );
        assert!(lines("").is_empty());
    }

    #[test]
    fn assigns_finds_the_equals_sign() {
        assert_eq!(assigns("KEY=1", "KEY"), Some(3));
        assert_eq!(assigns("  export\tKEY = 1", "KEY"), Some(13));
        assert_eq!(assigns("export=1", "export"), Some(6));
        assert_eq!(assigns("KEYS=1", "KEY"), None);
        assert_eq!(assigns("# KEY=1", "KEY"), None);
    }

    #[test]
    fn each_check_accepts_a_plain_input() {
        graph_response(b"\x00\xc8{\"data\":{\"is_valid\":true,\"scopes\":[]}}");
        graph_response(b"");
        config(b"");
        dotenv(b"\x00EAAGabc\xffA=1\nWHATSAPP_ACCESS_TOKEN=old\r\nB=2");
        dotenv(b"\x00");
    }
}
