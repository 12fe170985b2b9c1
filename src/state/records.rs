//! [`RecordStore`]: the one way a JSON record file in the state directory is read, written and
//! locked.
//!
//! Every record file of the state directory goes through it: `state.json` itself
//! ([`super::StateStore`]), `rotations/<token>.json` (the rotation log), `targets/<token>.json`
//! (the target log) and `groups/<group>.json` (the last good member lists). So there is one
//! rule for each of the things that used to be written four times:
//!
//! - the directory is created 0700 whatever the umask ([`crate::fsutil::create_private_dir`]);
//! - a write is atomic and mode 0600 ([`crate::fsutil::write_atomic_with`]: temp file, fsync,
//!   rename, fsync of the directory), streamed into the file, never a second copy in memory;
//! - a missing file is `None`, an unreadable one [`StateError::Io`], and one that does not
//!   parse [`StateError::Corrupt`] naming the file and the line and column (never a value),
//!   and what moving it aside loses ([`RecordStore::aside_loses`]); what the caller does with
//!   a corrupt file is its own rule (the daemon sets `state.json` aside, a group's list is
//!   reported and treated as no list, a target log reported and started afresh);
//! - a lock is `flock`, taken without waiting: on `<name>.lock` beside one record
//!   ([`RecordStore::try_lock`]), or on the directory itself for all of them
//!   ([`RecordStore::try_lock_dir`]).
//!
//! The outbox's entries (`outbox/<id>.json`) are records too; the outbox (in `notify`) adds
//! the queue around them. The audit log (`audit.jsonl`) is appended, never rewritten, and
//! lives in `audit`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;

/// `rotations/`: one rotation record per token (and its lock).
pub const ROTATIONS_DIR: &str = "rotations";
/// `targets/`: one target log per token.
pub const TARGETS_DIR: &str = "targets";
/// `groups/`: one last good member list per group.
pub const GROUPS_DIR: &str = "groups";
/// `expiry/`: per token, the expiries Meta gave in `expires_in` for kinds `debug_token`
/// cannot inspect (Instagram, Threads), by fingerprint.
pub const EXPIRY_DIR: &str = "expiry";
/// `apps/`: per app tokenwarden authenticates as, whether Meta refuses its credentials
/// ([`crate::appcreds`]).
pub const APPS_DIR: &str = "apps";
/// `outbox/`: one entry per queued email.
pub const OUTBOX_DIR: &str = "outbox";
/// Every directory of the state directory that holds records, the state directory itself
/// (`""`, for `state.json`) first: where temp files a kill left behind are looked for at start.
pub const RECORD_DIRS: [&str; 7] = [
    "",
    OUTBOX_DIR,
    ROTATIONS_DIR,
    TARGETS_DIR,
    GROUPS_DIR,
    EXPIRY_DIR,
    APPS_DIR,
];

/// How a record is laid out in its file. Both are read the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Indented, for records a person reads (rotations, targets, groups).
    Pretty,
    /// One line, for `state.json`, which holds thousands of tokens.
    Compact,
}

/// A directory of JSON records in the state directory, one file per name (`<name>.json`).
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
    layout: Layout,
    loses: &'static str,
}

/// Holds a record's lock until dropped.
#[derive(Debug)]
pub struct RecordLock(#[allow(dead_code)] std::fs::File);

impl RecordStore {
    /// The records in `dir` (created 0700 on the first write or lock), written with `layout`.
    pub fn new(dir: PathBuf, layout: Layout) -> RecordStore {
        RecordStore {
            dir,
            layout,
            loses: "tokenwarden then starts without it",
        }
    }

    /// The same store, saying in a corrupt file's error what moving the file aside loses.
    #[must_use]
    pub fn aside_loses(mut self, loses: &'static str) -> RecordStore {
        self.loses = loses;
        self
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of record `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    fn io(path: &Path, source: std::io::Error) -> StateError {
        StateError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn corrupt(&self, path: PathBuf, e: &serde_json::Error) -> StateError {
        StateError::Corrupt {
            path,
            reason: format!("line {} column {}", e.line(), e.column()),
            loses: self.loses,
        }
    }

    /// Reads record `name`; `None` when there is none.
    ///
    /// # Errors
    /// [`StateError::Io`] when the file cannot be read, [`StateError::Corrupt`] when it does
    /// not parse as a `T`.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt(path, &e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path, e)),
        }
    }

    /// [`load`](Self::load), parsing straight from the file instead of from a copy of it in
    /// memory: for a reader that wants a few fields of a large record (`/metrics`).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_streamed<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        let path = self.path(name);
        match std::fs::File::open(&path) {
            Ok(f) => serde_json::from_reader(std::io::BufReader::new(f))
                .map(Some)
                .map_err(|e| self.corrupt(path, &e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(&path, e)),
        }
    }

    /// Writes record `name` atomically, mode 0600, creating the directory (0700) first.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), StateError> {
        self.ensure_dir()?;
        let path = self.path(name);
        let layout = self.layout;
        crate::fsutil::write_atomic_with(&path, 0o600, |w| {
            match layout {
                Layout::Pretty => serde_json::to_writer_pretty(w, value),
                Layout::Compact => serde_json::to_writer(w, value),
            }
            .map_err(std::io::Error::other)
        })
        .map_err(|e| Self::io(&path, e))
    }

    /// Takes record `name`'s lock (`<name>.lock`, mode 0600) without waiting; `None` when
    /// another process (or another open of it in this one) holds it.
    ///
    /// # Errors
    /// [`StateError::Io`] when the lock file cannot be created or opened.
    pub fn try_lock(&self, name: &str) -> Result<Option<RecordLock>, StateError> {
        self.ensure_dir()?;
        let path = self.dir.join(format!("{name}.lock"));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Self::io(&path, e))?;
        Self::try_flock(&path, f)
    }

    /// Takes the lock of the whole directory (the directory itself is locked: no lock file
    /// among the records) without waiting; `None` when another process holds it.
    ///
    /// # Errors
    /// [`StateError::Io`] when the directory cannot be created or opened.
    pub fn try_lock_dir(&self) -> Result<Option<RecordLock>, StateError> {
        self.ensure_dir()?;
        let f = std::fs::File::open(&self.dir).map_err(|e| Self::io(&self.dir, e))?;
        Self::try_flock(&self.dir, f)
    }

    fn try_flock(path: &Path, f: std::fs::File) -> Result<Option<RecordLock>, StateError> {
        match f.try_lock() {
            Ok(()) => Ok(Some(RecordLock(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Self::io(path, e)),
        }
    }

    fn ensure_dir(&self) -> Result<(), StateError> {
        crate::fsutil::create_private_dir(&self.dir).map_err(|e| Self::io(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn missing_is_none_and_records_round_trip_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        for (sub, layout) in [("pretty", Layout::Pretty), ("compact", Layout::Compact)] {
            let s = RecordStore::new(dir.path().join(sub), layout);
            assert_eq!(s.load::<Vec<u32>>("x").unwrap(), None);
            s.save("x", &vec![1_u32, 2]).unwrap();
            assert_eq!(s.load::<Vec<u32>>("x").unwrap(), Some(vec![1, 2]));
            assert_eq!(s.load_streamed::<Vec<u32>>("x").unwrap(), Some(vec![1, 2]));
            assert_eq!(mode(s.dir()), 0o700);
            assert_eq!(mode(&s.path("x")), 0o600);
            let text = std::fs::read_to_string(s.path("x")).unwrap();
            assert_eq!(text.contains('\n'), layout == Layout::Pretty, "{text}");
        }
    }

    #[test]
    fn a_corrupt_record_names_its_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let s = RecordStore::new(dir.path().to_path_buf(), Layout::Pretty);
        std::fs::write(s.path("g"), "[{\"member\":").unwrap();
        for e in [
            s.load::<Vec<u32>>("g").unwrap_err(),
            s.load_streamed::<Vec<u32>>("g").unwrap_err(),
        ] {
            match e {
                StateError::Corrupt { path, reason, .. } => {
                    assert_eq!(path, s.path("g"));
                    assert!(reason.starts_with("line 1 column"), "{reason}");
                }
                e => panic!("not corrupt: {e}"),
            }
        }
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let s = RecordStore::new(dir.path().join("rotations"), Layout::Pretty);
        let held = s.try_lock("prod").unwrap().expect("free");
        assert!(s.try_lock("prod").unwrap().is_none(), "held");
        assert!(s.try_lock("other").unwrap().is_some(), "per record");
        assert_eq!(mode(&s.dir().join("prod.lock")), 0o600);
        drop(held);
        assert!(s.try_lock("prod").unwrap().is_some(), "released");
        let all = s.try_lock_dir().unwrap().expect("free");
        assert!(s.try_lock_dir().unwrap().is_none(), "held");
        drop(all);
        assert!(s.try_lock_dir().unwrap().is_some(), "released");
    }
}
