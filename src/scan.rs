//! The search for forgotten copies of an old token before it is revoked.
//!
//! The usual outage after a manual rotation is the copy nobody remembered: a second server's
//! `.env`, a worker's config, a backup restored later. Before revoking the old token,
//! tokenwarden searches the configured roots for it (outside the targets it manages) and holds
//! the revoke while any copy remains, naming the files. The search is bounded: files larger
//! than the limit and binary files are skipped, symlinks are not followed, and it stops after
//! a maximum number of files, saying so.

use std::path::{Path, PathBuf};

use crate::config::ScanConfig;
use crate::secret::Secret;

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Files that contain the token.
    pub copies: Vec<PathBuf>,
    /// Files read.
    pub scanned: usize,
    /// Whether the file limit stopped the search early.
    pub truncated: bool,
    /// Directories or files that could not be read (permission), at most a few.
    pub unreadable: Vec<PathBuf>,
}

/// Bytes read to decide whether a file is binary (it holds a NUL byte there).
const SNIFF: usize = 8192;

/// Searches `cfg.roots` for files holding `token`, skipping the `managed` paths (the targets
/// that tokenwarden itself updates).
pub fn find_copies(cfg: &ScanConfig, token: &Secret, managed: &[PathBuf]) -> Found {
    let mut found = Found::default();
    let needle = token.expose().as_bytes();
    if needle.is_empty() {
        return found;
    }
    let mut stack: Vec<PathBuf> = cfg.roots.clone();
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) => {
                note_unreadable(&mut found, dir);
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // `file_type` does not follow symlinks: a link is neither searched nor followed.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() || managed.iter().any(|m| m == &path) {
                continue;
            }
            if found.scanned >= cfg.max_files {
                found.truncated = true;
                return found;
            }
            match entry.metadata() {
                Ok(m) if m.len() <= cfg.max_file_size => {}
                _ => continue,
            }
            found.scanned += 1;
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let head = &bytes[..bytes.len().min(SNIFF)];
                    if !head.contains(&0) && contains(&bytes, needle) {
                        found.copies.push(path);
                    }
                }
                Err(_) => note_unreadable(&mut found, path),
            }
        }
    }
    found.copies.sort();
    found
}

fn note_unreadable(found: &mut Found, path: PathBuf) {
    if found.unreadable.len() < 5 {
        found.unreadable.push(path);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Paths as a short list for messages.
pub fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p: &PathBuf| Path::display(p).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_text_copies_skips_managed_binary_large_and_symlinked_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let token = Secret::new("EAAGoldtoken123");
        std::fs::create_dir_all(root.join("srv/app")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("srv/app/.env"),
            "WHATSAPP_ACCESS_TOKEN=EAAGoldtoken123\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/worker.conf"), "token: EAAGoldtoken123").unwrap();
        std::fs::write(root.join("etc/clean.conf"), "token: EAAGnewtoken").unwrap();
        std::fs::write(root.join("etc/blob.bin"), b"\0\0EAAGoldtoken123").unwrap();
        std::fs::write(
            root.join("etc/huge.log"),
            format!("{}EAAGoldtoken123", "x".repeat(2048)),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("etc/worker.conf"), root.join("srv/link.conf"))
            .unwrap();
        let cfg = ScanConfig {
            roots: vec![root.to_path_buf()],
            max_file_size: 1024,
            max_files: 100,
        };
        let managed = vec![root.join("srv/app/.env")];
        let f = find_copies(&cfg, &token, &managed);
        assert_eq!(f.copies, vec![root.join("etc/worker.conf")]);
        assert!(!f.truncated);
        assert_eq!(f.scanned, 3, "managed, huge and the symlink are not read");

        let unmanaged = find_copies(&cfg, &token, &[]);
        assert_eq!(unmanaged.copies.len(), 2);

        let tight = ScanConfig {
            max_files: 1,
            ..cfg
        };
        assert!(find_copies(&tight, &token, &[]).truncated);
    }
}
