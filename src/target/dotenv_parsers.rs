//! The dotenv editor against the parsers applications really use (issue 14, point 20):
//! python-dotenv (from the test venv), Node's `dotenv` (from `tests/support/node_modules`) and
//! the `dotenvy` crate. Every fixture of the editor's unit tests and every input of the fuzz
//! corpus is edited with [`set`]; whenever the editor accepts, each parser must read the new
//! value for the key and, for every other key, the same value from the new file as from the
//! old one. `tests/run.sh` installs both outside parsers.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::dotenv::set;

/// What one parser made of one file: each key's value (`None` for a bare `KEY` line, which only
/// python-dotenv reports), or why it could not read the file.
type Parsed = Result<BTreeMap<String, Option<String>>, String>;

/// Files on which python-dotenv, Node's `dotenv` and `dotenvy` read lines differently.
const DISPUTED: &[(&str, &str)] = &[
    ("backquotes", "WHATSAPP_ACCESS_TOKEN=`old`\n"),
    (
        "backquotes with a comment",
        "A=1\nWHATSAPP_ACCESS_TOKEN=`old` # c\n",
    ),
    (
        "an escaped single quote folds lines in python-dotenv",
        "A='it\\'s\nWHATSAPP_ACCESS_TOKEN=old\nB='x'\n",
    ),
    (
        "an escaped single quote that never closes",
        "A='it\\'s\nWHATSAPP_ACCESS_TOKEN=old\nB=2\n",
    ),
    ("an escaped single quote, key appended", "A='it\\'s\nB=2\n"),
    (
        "an escaped single quote closed later",
        "A='it\\'s'\nWHATSAPP_ACCESS_TOKEN=old\n",
    ),
    (
        "the key alone after its assignment",
        "WHATSAPP_ACCESS_TOKEN=old\nWHATSAPP_ACCESS_TOKEN\n",
    ),
    (
        "export of the key alone after it",
        "WHATSAPP_ACCESS_TOKEN=old\nexport WHATSAPP_ACCESS_TOKEN # c\n",
    ),
    (
        "a yaml-style line after the assignment",
        "WHATSAPP_ACCESS_TOKEN=old\nWHATSAPP_ACCESS_TOKEN: yaml-style\n",
    ),
    ("a lone carriage return", "A=1\rWHATSAPP_ACCESS_TOKEN=old\n"),
    ("a digit-led name opens a quote", "1='on\nB=2\n"),
    (
        "a non-ASCII name opens a quote",
        "NÉB='x\nWHATSAPP_ACCESS_TOKEN=old\n",
    ),
    (
        "a double-quoted value spanning lines",
        "CERT=\"-----BEGIN\nWHATSAPP_ACCESS_TOKEN=inside\n-----END\"\nWHATSAPP_ACCESS_TOKEN=old\n",
    ),
    (
        "an escaped double quote",
        "A=\"say \\\"hi\"\nWHATSAPP_ACCESS_TOKEN=old\n",
    ),
    ("a backquote left open", "A=`x\nWHATSAPP_ACCESS_TOKEN=old\n"),
];

/// One edit to check.
struct Case {
    what: String,
    key: String,
    value: String,
    before: String,
    after: String,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut add = |what: String, key: &str, value: &str, before: &str| {
        if let Ok(edited) = set(before, key, value) {
            out.push(Case {
                what,
                key: key.to_string(),
                value: value.to_string(),
                before: before.to_string(),
                after: edited.text,
            });
        }
    };
    for (what, before, ..) in super::dotenv::tests::FILES {
        add(
            format!("fixture {what:?}"),
            super::dotenv::DEFAULT_KEY,
            "EAAGnew0123456789",
            before,
        );
    }
    // Shapes on which the parsers part ways (issue 14, point 20), each with the value a
    // rotation writes and one that needs quotes.
    for (what, before) in DISPUTED {
        for value in ["EAAGnew0123456789", "a b"] {
            add(
                format!("disputed {what:?}"),
                super::dotenv::DEFAULT_KEY,
                value,
                before,
            );
        }
    }
    for (what, before, value, _) in super::dotenv::tests::STYLE_SWITCHES {
        add(
            format!("fixture {what:?}"),
            super::dotenv::DEFAULT_KEY,
            value,
            before,
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dotenv");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let data = std::fs::read(&path).unwrap();
        if let Some((key, value, text)) = crate::fuzzing::dotenv_case(&data) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            add(format!("corpus {name}"), key, &value, &text);
        }
    }
    out
}

/// Runs `program args` with the files' paths on standard input, one JSON object per file back.
fn external(program: &Path, args: &[&Path], files: &[PathBuf]) -> Vec<Parsed> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut input = String::new();
    for f in files {
        input.push_str(&f.display().to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), files.len(), "one answer per file");
    lines
        .iter()
        .map(|l| Ok(serde_json::from_str(l).unwrap()))
        .collect()
}

fn dotenvy(text: &str) -> Parsed {
    let mut out = BTreeMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((k, v)) => {
                out.insert(k, Some(v));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

/// Where `case` goes wrong for a parser that read `before` and `after`, in words.
fn disagreement(case: &Case, before: &Parsed, after: &Parsed) -> Option<String> {
    let after = match after {
        Ok(a) => a,
        Err(e) => {
            // A file the parser could not read before may stay unreadable; one it could read
            // must stay readable.
            return before
                .is_ok()
                .then(|| format!("the new file no longer parses: {e}"));
        }
    };
    let Ok(before) = before else {
        return None;
    };
    match after.get(&case.key) {
        Some(Some(v)) if *v == case.value => {}
        got => return Some(format!("the key reads {got:?}")),
    }
    for k in before.keys().chain(after.keys()) {
        if *k == case.key {
            continue;
        }
        if before.get(k) != after.get(k) {
            // dotenvy substitutes `$KEY`: a value built from the key changes with it.
            let refers = before.get(k).cloned().flatten().is_some_and(|v| {
                v.contains(&format!("${}", case.key)) || v.contains(&format!("${{{}}}", case.key))
            });
            if !refers {
                return Some(format!(
                    "`{k}` changed from {:?} to {:?}",
                    before.get(k),
                    after.get(k)
                ));
            }
        }
    }
    None
}

#[test]
fn every_fixture_and_corpus_edit_reads_the_same_in_python_dotenv_node_dotenv_and_dotenvy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("TOKENWARDEN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no test venv at {}: run `tests/run.sh`, which installs python-dotenv",
        venv.display()
    );
    let support = root.join("tests/support");
    assert!(
        support.join("node_modules/dotenv").exists(),
        "no Node dotenv in tests/support/node_modules: run `tests/run.sh` (npm ci there)"
    );
    let cases = cases();
    assert!(cases.len() >= 100, "only {} accepted edits", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        for (side, text) in [("before", &c.before), ("after", &c.after)] {
            let p = dir.path().join(format!("{i}.{side}.env"));
            std::fs::write(&p, text).unwrap();
            files.push(p);
        }
    }
    let py = external(&python, &[&support.join("dotenv_parse.py")], &files);
    let node = external(
        Path::new("node"),
        &[&support.join("dotenv_parse.js")],
        &files,
    );
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let parsers: [(&str, Parsed, Parsed); 3] = [
            ("python-dotenv", py[2 * i].clone(), py[2 * i + 1].clone()),
            ("node dotenv", node[2 * i].clone(), node[2 * i + 1].clone()),
            ("dotenvy", dotenvy(&c.before), dotenvy(&c.after)),
        ];
        for (name, before, after) in &parsers {
            if let Some(why) = disagreement(c, before, after) {
                failures.push(format!(
                    "{}: {name}: {why}\n  key {:?} value {:?}\n  before {:?}\n  after  {:?}",
                    c.what, c.key, c.value, c.before, c.after
                ));
            }
        }
    }
    eprintln!(
        "{} accepted edits checked against 3 parsers, {} disagreements",
        cases.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
