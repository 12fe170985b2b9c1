//! The shape of the code: the `crate::` references between `src/`'s top-level modules form a
//! graph without cycles, and the pure core names no IO module and no IO library.
//!
//! The test reads the sources as text: comments, string and character literals and test-only
//! code (an item under `#[cfg(test)]`, a file declared by `#[cfg(test)] mod x;`) are taken out,
//! then every `crate::<module>` and `crate::{<module>, ...}` is an edge from the module the file
//! belongs to. The cycle test prints the whole graph (ARCHITECTURE.md says how to see it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges between top-level modules, each with the files (relative to `src/`) that make it.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The modules that decide without doing IO, and what they must never reach for.
const PURE_CORE: &[&str] = &[
    "policy.rs",
    "rotation/mod.rs",
    "usable.rs",
    "timefmt.rs",
    "lint.rs",
    "secret.rs",
    "meta/mod.rs",
    "meta/error.rs",
    "meta/token.rs",
    "meta/version.rs",
];

/// Modules whose business is IO (files, network, processes, the clock's sleeps). `config` and
/// `state` are not here: the core names their data types (`TokenConfig`, `TokenState`), never
/// their loading or writing.
const IO_MODULES: &[&str] = &[
    "audit", "channel", "check", "cli", "daemon", "delivery", "demo", "discover", "doctor",
    "fsutil", "graph", "liveness", "metrics", "notify", "observe", "sandbox", "scan", "sdnotify",
    "store", "target",
];

/// Crates and std modules that do IO.
const IO_PATHS: &[&str] = &[
    "tokio",
    "reqwest",
    "lettre",
    "hyper",
    "aws_sdk",
    "std::fs",
    "std::net",
    "std::process",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `text` without comments, string literals and character literals (each replaced by a space,
/// so no `crate::` inside them counts and no brace inside them confuses the item skipper).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            // Block comments nest in Rust.
            let (mut depth, mut j) = (0usize, i);
            while j < b.len() {
                if text[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if text[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
            out.push(' ');
        } else if let Some(len) = raw_string_len(rest, i > 0 && is_ident(b[i - 1])) {
            i += len;
            out.push(' ');
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push(' ');
        } else if b[i] == b'\'' && char_literal_len(rest).is_some() {
            i += char_literal_len(rest).unwrap_or(1);
            out.push(' ');
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The length of a raw string (`r"..."`, `r#"..."#`, `br"..."`) starting `rest`, if one does.
fn raw_string_len(rest: &str, after_ident: bool) -> Option<usize> {
    if after_ident {
        return None;
    }
    let body = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = body.len() - body.trim_start_matches('#').len();
    let open = &body[hashes..];
    if !open.starts_with('"') {
        return None;
    }
    let close = format!("\"{}", "#".repeat(hashes));
    let end = open[1..].find(&close)?;
    Some(rest.len() - open.len() + 1 + end + close.len())
}

/// The length of a character literal (`'x'`, `'\n'`, `'\u{1F600}'`) starting `rest`; `None`
/// for a lifetime or a label.
fn char_literal_len(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    let (_, first) = chars.next()?;
    if first == '\\' {
        return rest[2..].find('\'').map(|e| e + 3);
    }
    let (at, next) = chars.next()?;
    (next == '\'').then_some(at + 1)
}

/// `code` without the items under `#[cfg(test)]`, and the names of the modules it declares
/// under `#[cfg(test)]` without a body (their files are test code too).
fn without_test_items(code: &str) -> (String, Vec<String>) {
    let mut out = code.to_string();
    let mut test_files = Vec::new();
    while let Some(at) = out.find("#[cfg(test)]") {
        let b = out.as_bytes();
        let mut j = at + "#[cfg(test)]".len();
        let item_start = j;
        let mut depth = 0usize;
        while j < b.len() {
            match b[j] {
                b';' if depth == 0 => {
                    j += 1;
                    break;
                }
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let item: Vec<&str> = out[item_start..j].split_whitespace().collect();
        if let Some(pos) = item.iter().position(|w| *w == "mod")
            && let Some(name) = item.get(pos + 1).and_then(|n| n.strip_suffix(';'))
        {
            test_files.push(name.to_string());
        }
        out.replace_range(at..j, " ");
    }
    (out, test_files)
}

/// The first path segments named by each `crate::` in `code`: `crate::a::b` names `a`,
/// `crate::{a::b, c}` names `a` and `c`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(found) = code[from..].find("crate::") {
        let at = from + found;
        from = at + "crate::".len();
        if at > 0 && is_ident(b[at - 1]) {
            continue; // `tokenwarden_crate::`, not ours
        }
        let rest = &code[from..];
        if rest.starts_with('{') {
            let (mut depth, mut segment_start, mut end) = (0usize, 1, rest.len());
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i;
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        names.insert(leading_ident(&rest[segment_start..i]));
                        segment_start = i + 1;
                    }
                    _ => {}
                }
            }
            names.insert(leading_ident(&rest[segment_start..end]));
        } else {
            names.insert(leading_ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn leading_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules `lib.rs` declares.
fn top_level_modules() -> BTreeSet<String> {
    let lib = code_only(&std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs"));
    lib.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("pub ").unwrap_or(l.trim());
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// Every `.rs` file under `dir`, relative to `src/`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(src()).expect("under src").to_path_buf());
        }
    }
}

/// Each file's non-test code, by its path relative to `src/` (test-only files left out).
fn library_code() -> BTreeMap<String, String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut code = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for rel in &files {
        let text = std::fs::read_to_string(src().join(rel)).expect("read source");
        let (kept, test_mods) = without_test_items(&code_only(&text));
        // `a/mod.rs` and `a.rs` both declare children in `a/`.
        let dir = if rel.file_name().is_some_and(|n| n == "mod.rs") {
            rel.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            rel.with_extension("")
        };
        for m in test_mods {
            test_only.insert(dir.join(format!("{m}.rs")));
            test_only.insert(dir.join(&m).join("mod.rs"));
        }
        code.insert(rel.to_string_lossy().into_owned(), kept);
    }
    // A test-only module's own children are test code as well.
    code.retain(|rel, _| !test_only.iter().any(|t| Path::new(rel).starts_with(t)));
    code.retain(|rel, _| {
        !test_only
            .iter()
            .filter(|t| t.ends_with("mod.rs"))
            .any(|t| t.parent().is_some_and(|d| Path::new(rel).starts_with(d)))
    });
    code
}

/// The module graph: an edge `a -> b` for every reference from a file of `a` to `b`.
fn module_graph() -> Graph {
    let modules = top_level_modules();
    let mut graph = Graph::new();
    for (rel, code) in library_code() {
        let top = rel
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if !modules.contains(&top) {
            continue; // lib.rs, main.rs
        }
        let from = graph.entry(top.clone()).or_default();
        for name in crate_references(&code) {
            if name != top && modules.contains(&name) {
                from.entry(name).or_default().insert(rel.clone());
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the modules along it (the first repeated at the end), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        graph: &Graph,
        node: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(cycle) = visit(graph, next, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|n| visit(graph, n, &mut marks, &mut Vec::new()))
}

/// The cycle with the files that make each edge, one edge a line.
fn describe(graph: &Graph, cycle: &[String]) -> String {
    cycle
        .windows(2)
        .map(|w| {
            let files: Vec<&str> = graph[&w[0]][&w[1]].iter().map(String::as_str).collect();
            format!("  {} -> {} (in {})", w[0], w[1], files.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The graph in Graphviz's dot language, one edge a line.
fn dot(graph: &Graph) -> String {
    let mut out = String::from("digraph modules {\n");
    for (from, edges) in graph {
        for to in edges.keys() {
            out.push_str(&format!("  \"{from}\" -> \"{to}\";\n"));
        }
    }
    out + "}\n"
}

/// Also prints the graph for a person (shown with `--nocapture`; ARCHITECTURE.md says how).
#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = module_graph();
    print!("{}", dot(&graph));
    assert!(
        graph.len() > 20
            && graph
                .get("daemon")
                .is_some_and(|e| e.contains_key("policy")),
        "the scan must see the crate's modules and their references: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules of src/:\n{}\nmove what both sides need \
             below them (as `meta` holds the Graph facts `config` and `graph` share)",
            describe(&graph, &cycle)
        );
    }
}

#[test]
fn the_pure_core_names_no_io() {
    let code = library_code();
    for file in PURE_CORE {
        let text = code
            .get(*file)
            .unwrap_or_else(|| panic!("src/{file} is gone"));
        let refs = crate_references(text);
        for io in IO_MODULES {
            assert!(
                !refs.contains(*io),
                "src/{file} is pure, but it names crate::{io}"
            );
        }
        for path in IO_PATHS {
            // A whole path, not a part of a longer name (`hyperlink`, `my::tokio`).
            let b = text.as_bytes();
            let named = text.match_indices(path).any(|(at, _)| {
                let end = at + path.len();
                (at == 0 || !is_ident(b[at - 1]) && b[at - 1] != b':')
                    && (end == b.len() || !is_ident(b[end]))
            });
            assert!(!named, "src/{file} is pure, but it names {path}");
        }
    }
}

/// The scanner itself, on text whose answer is known: a cycle it cannot see passes silently.
#[test]
fn the_scan_sees_references_and_skips_comments_strings_and_tests() {
    let text = r##"
        //! see crate::daemon
        use crate::{policy::{State, Verdict}, secret::Secret};
        use crate::graph;
        /* crate::store /* nested */ crate::notify */
        const S: &str = "crate::cli";
        const R: &str = r#"crate::audit"#;
        const C: char = '{';
        fn f<'a>(x: &'a str) -> &'a str { let _ = crate::timefmt::utc; x }
        #[cfg(test)]
        mod tests { use crate::sandbox; fn g() { if true { crate::demo::run(); } } }
        #[cfg(test)]
        mod parsers;
    "##;
    let (code, test_mods) = without_test_items(&code_only(text));
    let refs: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(refs, ["graph", "policy", "secret", "timefmt"]);
    assert_eq!(test_mods, ["parsers"]);

    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("a", "d")] {
        graph
            .entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert(format!("{a}.rs"));
    }
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a is a cycle");
    assert_eq!(cycle, ["a", "b", "c", "a"]);
    assert!(describe(&graph, &cycle).contains("c -> a (in c.rs)"));
    assert!(dot(&graph).contains("  \"c\" -> \"a\";\n"));
    graph.get_mut("c").map(|e| e.remove("a"));
    assert_eq!(find_cycle(&graph), None);
}
