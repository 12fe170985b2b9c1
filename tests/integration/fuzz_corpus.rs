//! The fuzz corpora replayed as regression tests: every input under `fuzz/corpus/<target>/`
//! (seeds, what libFuzzer kept, and every input that once found a bug) goes through the same
//! check the fuzz target runs (`tokenwarden::fuzzing`), on stable and without libFuzzer.

use std::path::Path;

/// Fewer inputs than this means the corpus went missing, not that everything passed.
const MIN_INPUTS: usize = 40;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        let data = std::fs::read(path).unwrap();
        // A failure names the input; reproduce it with
        // `cargo +nightly fuzz run <target> <path>`.
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            eprintln!("fuzz corpus input {} failed", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    assert!(
        entries.len() >= MIN_INPUTS,
        "only {} inputs in {}",
        entries.len(),
        dir.display()
    );
}

#[test]
fn graph_response_corpus() {
    replay("graph_response", tokenwarden::fuzzing::graph_response);
}

#[test]
fn config_corpus() {
    replay("config", tokenwarden::fuzzing::config);
}

#[test]
fn dotenv_corpus() {
    replay("dotenv", tokenwarden::fuzzing::dotenv);
}
