//! The state directory: what the daemon knows and has sent, surviving restarts.
//!
//! One JSON file, `state.json`, written atomically (temp, fsync, rename) after every change, so
//! `tokenwarden status` can read it while the daemon runs and a crash loses at most the step
//! in flight. It holds fingerprints and facts, never a token. The email outbox lives beside it
//! in `outbox/` (see `notify`).
//!
//! A `state.json` that cannot be parsed does not stop the daemon (under `Restart=on-failure`
//! that is a restart loop and no alert at all): [`StateStore::load_or_set_aside`] renames it to
//! `state.json.corrupt-<unix seconds>` and starts from an empty state, and the daemon sends one
//! alert saying so. Commands other than `run` still report it and stop.
//!
//! Every record file of the state directory (this one, `rotations/`, `targets/`, `groups/`) is
//! read, written and locked through [`RecordStore`] (`records.rs`): one directory rule, one
//! atomic write, one lock, one way to report a corrupt file.
//!
//! [`Reserve`] is a file of [`RESERVE_BYTES`] kept in the state directory while there is room.
//! When a write there fails because the disk is full, the daemon deletes it, which makes room
//! for the alert that says so (and the state write that failed), and recreates it once writes
//! succeed again.

pub mod queue;
pub mod records;

pub use records::{
    APPS_DIR, EXPIRY_DIR, GROUPS_DIR, Layout, OUTBOX_DIR, RECORD_DIRS, ROTATIONS_DIR, RecordLock,
    RecordStore, TARGETS_DIR,
};

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::policy::{Effective, Ledger, State, TokenFacts, Verdict};

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// [`STATE_FILE`]'s record name in the state directory's [`RecordStore`].
const STATE_RECORD: &str = "state";

/// Everything tokenwarden remembers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Layout version, 1.
    pub format: u32,
    /// Per token, by name.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenState>,
}

/// What is known about one token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenState {
    /// Last check attempt.
    pub last_check: Option<Timestamp>,
    /// Last check that reached a verdict about the token itself.
    pub last_success: Option<Timestamp>,
    /// The latest verdict.
    pub verdict: Option<Verdict>,
    /// The last known facts (kept when a later check fails).
    pub facts: Option<TokenFacts>,
    /// Start of the current streak of transient failures.
    pub failing_since: Option<Timestamp>,
    /// Consecutive failed checks (transient or not).
    #[serde(default)]
    pub check_errors: u64,
    /// The state last computed.
    pub state: Option<State>,
    /// The effective expiry last computed.
    pub effective: Option<Effective>,
    /// What was emailed.
    #[serde(default)]
    pub ledger: Ledger,
    /// The last email queued: when and its subject.
    pub last_email: Option<(Timestamp, String)>,
    /// When the next scheduled check is due.
    pub next_check: Option<Timestamp>,
    /// Meta throttled the last check: no check before this time (when access returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<Timestamp>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// IO on the state directory.
    #[error("state directory `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a record tokenwarden wrote.
    #[error("`{path}` is corrupt ({reason}); move it aside to start afresh ({loses})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Position of the problem.
        reason: String,
        /// What starting afresh without the file means, in words.
        loses: &'static str,
    },
}

impl StateError {
    /// The error as an IO error, for callers that report IO errors (the outbox): an IO
    /// failure as it was (so a full disk is still seen as one), a corrupt file as invalid data.
    pub fn into_io(self) -> std::io::Error {
        match self {
            StateError::Io { source, .. } => source,
            e @ StateError::Corrupt { .. } => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
            }
        }
    }
}

/// The state file of one state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    records: RecordStore,
}

impl StateStore {
    /// The state in `dir` (created on first save, mode 0700).
    pub fn new(dir: &Path) -> Self {
        StateStore {
            dir: dir.to_path_buf(),
            // Compact: with thousands of tokens the state is megabytes.
            records: RecordStore::new(dir.to_path_buf(), Layout::Compact)
                .aside_loses("alerts already sent may then be sent again"),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file.
    pub fn path(&self) -> PathBuf {
        self.records.path(STATE_RECORD)
    }

    /// Reads the state; a missing file is an empty state.
    ///
    /// # Errors
    /// [`StateError`] when the file cannot be read or parsed.
    pub fn load(&self) -> Result<Snapshot, StateError> {
        Ok(self.records.load(STATE_RECORD)?.unwrap_or(Snapshot {
            format: 1,
            tokens: BTreeMap::new(),
        }))
    }

    /// [`load`](Self::load), except that a corrupt file is renamed to
    /// `state.json.corrupt-<now>` and an empty state returned, with the new name of the file
    /// (for the alert that says so). The rename keeps the file for a person to look at, and
    /// means the next start finds no corrupt file: one alert, not one per restart.
    ///
    /// # Errors
    /// [`StateError::Io`] when the file cannot be read or moved aside.
    pub fn load_or_set_aside(
        &self,
        now: Timestamp,
    ) -> Result<(Snapshot, Option<PathBuf>), StateError> {
        match self.load() {
            Ok(snap) => Ok((snap, None)),
            Err(StateError::Corrupt { path, reason, .. }) => {
                let aside = self
                    .dir
                    .join(format!("{STATE_FILE}.corrupt-{}", now.as_second()));
                std::fs::rename(&path, &aside).map_err(|source| StateError::Io {
                    path: path.clone(),
                    source,
                })?;
                tracing::error!(path = %path.display(), moved_to = %aside.display(), %reason, "the state file is corrupt; moved it aside and started with an empty state");
                Ok((
                    Snapshot {
                        format: 1,
                        tokens: BTreeMap::new(),
                    },
                    Some(aside),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads only part of each token's state, `V` (a type with the fields wanted, which serde
    /// fills from the file and ignores the rest): for readers such as `/metrics` that need a
    /// few fields of thousands of tokens and not a copy of everything.
    ///
    /// # Errors
    /// As [`StateStore::load`].
    pub fn load_view<V: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<BTreeMap<String, V>, StateError> {
        #[derive(Deserialize)]
        struct View<V> {
            #[serde(default = "BTreeMap::new")]
            tokens: BTreeMap<String, V>,
        }
        Ok(self
            .records
            .load_streamed::<View<V>>(STATE_RECORD)?
            .map(|v| v.tokens)
            .unwrap_or_default())
    }

    /// Writes the state atomically, mode 0600.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save(&self, snap: &Snapshot) -> Result<(), StateError> {
        // Streamed into the file: a copy in memory per save is what an allocator keeps
        // afterwards.
        self.records.save(STATE_RECORD, snap)
    }
}

/// The size of the reserve: room for the "disk full" email and a state of some hundred tokens.
pub const RESERVE_BYTES: u64 = 1024 * 1024;
/// The reserve's file name in the state directory.
pub const RESERVE_FILE: &str = ".tokenwarden-reserve";

/// Space held back in the state directory for the moment it fills up.
#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of `dir`, of `bytes` bytes.
    pub fn new(dir: &Path, bytes: u64) -> Reserve {
        Reserve {
            path: dir.join(RESERVE_FILE),
            bytes,
        }
    }

    /// Makes sure the reserve exists at its full size, with its blocks allocated (written,
    /// not a sparse file, which would hold nothing back).
    ///
    /// # Errors
    /// The disk is (still) full, or another IO error.
    pub fn ensure(&self) -> std::io::Result<()> {
        use std::io::Write;
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes) {
            return Ok(());
        }
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(&self.path)?;
            let chunk = vec![0x5a_u8; 64 * 1024];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        if result.is_err() {
            // Half a reserve is not worth the space it takes from the daemon's own files.
            let _ = std::fs::remove_file(&self.path);
        }
        result
    }

    /// Deletes the reserve; whether there was one to delete.
    pub fn release(&self) -> bool {
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// Whether `e` says the disk (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join("state"));
        assert!(store.load().unwrap().tokens.is_empty());
        let mut snap = Snapshot {
            format: 1,
            tokens: BTreeMap::new(),
        };
        snap.tokens.insert(
            "prod".into(),
            TokenState {
                last_check: Some(Timestamp::from_second(5).unwrap()),
                state: Some(State::Critical),
                ..TokenState::default()
            },
        );
        store.save(&snap).unwrap();
        assert_eq!(store.load().unwrap(), snap);
    }

    #[test]
    fn the_reserve_is_allocated_released_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reserve::new(dir.path(), 100_000);
        r.ensure().unwrap();
        let meta = std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.len(), 100_000);
        assert!(meta.blocks() * 512 >= 100_000, "allocated, not sparse");
        assert!(r.release());
        assert!(!r.release());
        r.ensure().unwrap();
        assert!(dir.path().join(RESERVE_FILE).exists());
    }

    #[test]
    fn corrupt_state_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), "{\"format\":1,\"tokens\":{\"x\":").unwrap();
        let e = store.load().unwrap_err();
        assert!(e.to_string().contains("move it aside"), "{e}");
        assert!(
            e.to_string()
                .ends_with("(alerts already sent may then be sent again)"),
            "{e}"
        );
    }

    #[test]
    fn a_corrupt_state_is_set_aside_once_and_a_fresh_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::write(store.path(), "{\"format\":1,\"tokens\":{\"x\":").unwrap();
        let now = Timestamp::from_second(1_790_000_000).unwrap();
        let (snap, aside) = store.load_or_set_aside(now).unwrap();
        assert!(snap.tokens.is_empty());
        let aside = aside.expect("moved aside");
        assert_eq!(aside.file_name().unwrap(), "state.json.corrupt-1790000000");
        assert!(
            std::fs::read_to_string(&aside)
                .unwrap()
                .starts_with("{\"format\"")
        );
        assert!(!store.path().exists());
        // The next start finds no corrupt file: nothing more to report.
        assert_eq!(store.load_or_set_aside(now).unwrap().1, None);
    }
}
