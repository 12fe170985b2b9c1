//! The file store: token versions and staging labels in one JSON file of mode 0600.
//!
//! The embedded default for one machine and the demo. The layout mirrors Secrets Manager so the
//! same rotation logic serves both:
//! `{"format":1,"secrets":{"NAME":{"versions":[{"id","value","stages":["AWSCURRENT"],"created_at"}]}}}`.
//! A file readable by group or others is refused, as ssh refuses a loose private key: the file
//! holds live tokens. So is a file owned by another user than tokenwarden's: its owner can
//! change it whatever its mode.
//!
//! Every write is a read-modify-write of the whole file under an exclusive lock on its
//! directory, so two tokenwarden processes (a daemon and a manual `import`) cannot interleave,
//! and the new file replaces the old atomically. A version that loses its last label is dropped:
//! a rejected or superseded token should not linger in the file.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AWSCURRENT, AWSPENDING, AWSPREVIOUS, SecretStore, StoreError, VersionId};
use crate::secret::Secret;

/// File name of the default store inside the state directory.
/// Unlabelled versions kept (the newest): enough for the candidates of racing rotations to
/// be found and revoked by the rotations that made them.
const KEEP_UNLABELLED: usize = 4;

pub const DEFAULT_FILE: &str = "tokens.json";

/// One entry (one token) of a file store.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    key: String,
}

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    /// Layout version, 1.
    pub format: u32,
    /// Entries by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, Entry>,
}

/// One token's versions.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Versions, oldest first.
    #[serde(default)]
    pub versions: Vec<Version>,
}

/// One version of a token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// Version id (unique within the entry).
    pub id: String,
    /// The token. Only ever serialized into this 0600 file.
    pub value: String,
    /// Staging labels such as `AWSCURRENT`.
    #[serde(default)]
    pub stages: Vec<String>,
    /// When the version was written (RFC 3339).
    pub created_at: String,
    /// The request token that staged this version, so a retried `put_pending` finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_token: Option<String>,
}

impl Version {
    fn has(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }

    fn remove(&mut self, stage: &str) {
        self.stages.retain(|s| s != stage);
    }

    fn add(&mut self, stage: &str) {
        if !self.has(stage) {
            self.stages.push(stage.to_string());
        }
    }
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("value", &Secret::new(self.value.clone()))
            .field("stages", &self.stages)
            .field("created_at", &self.created_at)
            .field("request_token", &self.request_token)
            .finish()
    }
}

impl FileStore {
    /// The entry `key` of the file at `path`.
    pub fn new(path: PathBuf, key: String) -> Self {
        FileStore { path, key }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn broken(&self, problem: impl Into<String>) -> StoreError {
        StoreError::Broken {
            store: self.describe(),
            problem: problem.into(),
        }
    }

    /// Reads and parses the whole file, checking its mode first.
    ///
    /// # Errors
    /// Missing file, loose permissions, unreadable or invalid JSON.
    pub fn read(&self) -> Result<StoreFile, StoreError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    store: self.describe(),
                    hint: self.import_hint(),
                });
            }
            Err(e) => {
                return Err(self.broken(format!("cannot read `{}`: {e}", self.path.display())));
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(self.broken(format!(
                "`{}` holds tokens but is readable or writable by group or others (mode {mode:03o}); run `chmod 600 {}`",
                self.path.display(),
                self.path.display()
            )));
        }
        // Owned by another user, the file is that user's to change: they could put a token of
        // their choosing in it (or read the tokens, whatever the mode says to others).
        if let Some(euid) = crate::fsutil::current_uid()
            && meta.uid() != euid
        {
            return Err(self.broken(format!(
                "`{}` holds tokens but belongs to uid {}, and tokenwarden runs as uid {euid}; run `chown {euid} {}`",
                self.path.display(),
                meta.uid(),
                self.path.display()
            )));
        }
        let text = std::fs::read(&self.path)
            .map_err(|e| self.broken(format!("cannot read `{}`: {e}", self.path.display())))?;
        // Only the position and category of a JSON error: its full text can quote a value,
        // which here would be a token.
        let file: StoreFile = serde_json::from_slice(&text).map_err(|e| {
            self.broken(format!(
                "`{}` is not a valid token store: {} at line {} column {}",
                self.path.display(),
                match e.classify() {
                    serde_json::error::Category::Syntax | serde_json::error::Category::Eof =>
                        "invalid JSON",
                    _ => "unexpected structure",
                },
                e.line(),
                e.column()
            ))
        })?;
        if file.format != 1 {
            return Err(self.broken(format!(
                "`{}` has format {}, this tokenwarden reads format 1",
                self.path.display(),
                file.format
            )));
        }
        Ok(file)
    }

    /// Sets `token` as the entry's current version, for first-time import and the demo. The
    /// previous current version, if any, keeps its value and is labelled `AWSPREVIOUS`.
    ///
    /// # Errors
    /// As [`FileStore::read`] (except a missing file, which is created), or a failed write.
    pub fn import_current(&self, token: &Secret, now: jiff::Timestamp) -> Result<(), StoreError> {
        self.modify(true, |entry| {
            for v in &mut entry.versions {
                v.remove(AWSPREVIOUS);
                if v.has(AWSCURRENT) {
                    v.remove(AWSCURRENT);
                    v.add(AWSPREVIOUS);
                }
            }
            entry.versions.push(Version {
                id: format!("v{}-{}", now.as_second(), token.fingerprint()),
                value: token.expose().to_string(),
                stages: vec![AWSCURRENT.to_string()],
                created_at: now.to_string(),
                request_token: None,
            });
            Ok(())
        })
    }

    /// Runs `change` on this entry under the store's lock and writes the result atomically
    /// (mode 0600). Nothing is written when `change` fails. `create` allows a missing file (and
    /// entry) to start empty; otherwise a missing file is [`StoreError::Missing`].
    fn modify<T>(
        &self,
        create: bool,
        change: impl FnOnce(&mut Entry) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fsutil::create_private_dir(dir)
                .map_err(|e| self.broken(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let _lock = self.lock()?;
        let mut file = match self.read() {
            Ok(f) => f,
            Err(StoreError::Missing { .. }) if create => StoreFile {
                format: 1,
                secrets: BTreeMap::new(),
            },
            Err(e) => return Err(e),
        };
        if !create && !file.secrets.contains_key(&self.key) {
            return Err(self.no_current());
        }
        let entry = file.secrets.entry(self.key.clone()).or_default();
        let out = change(entry)?;
        // A version without labels is reachable only by its id: a rotation that made it
        // reads it back to revoke it when another writer moved `AWSPENDING` away (Secrets
        // Manager keeps such versions too). The newest few are kept for that; older ones are
        // dropped, so rejected and superseded tokens do not pile up in the file.
        let mut unlabelled = entry
            .versions
            .iter()
            .filter(|v| v.stages.is_empty())
            .count();
        entry.versions.retain(|v| {
            if !v.stages.is_empty() {
                return true;
            }
            unlabelled -= 1;
            unlabelled < KEEP_UNLABELLED
        });
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| self.broken(e.to_string()))?;
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)
            .map_err(|e| self.broken(format!("cannot write `{}`: {e}", self.path.display())))?;
        Ok(out)
    }

    /// Takes the exclusive lock (`flock`) on the directory holding the store, held until the
    /// returned handle is dropped. Not the store file itself: every write replaces it by rename,
    /// so a waiter would wake up holding a lock on the old inode while a newcomer locks the new
    /// one. Not a separate lock file either: it would be one more file left in the state
    /// directory, and deleting it after use reopens the same race. Only tokenwarden's writers
    /// take this advisory lock; readers never need it, since a rename is atomic.
    fn lock(&self) -> Result<std::fs::File, StoreError> {
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let f = std::fs::File::open(dir)
            .map_err(|e| self.broken(format!("cannot open `{}` to lock it: {e}", dir.display())))?;
        f.lock()
            .map_err(|e| self.broken(format!("cannot lock `{}`: {e}", dir.display())))?;
        Ok(f)
    }

    fn conflict(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Conflict {
            store: self.describe(),
            detail: detail.into(),
        }
    }

    /// This entry's current version in a file already read (a check of many entries of one
    /// file reads it once, not once per entry).
    ///
    /// # Errors
    /// [`StoreError::Missing`] when the entry has no current version.
    pub fn current_in(&self, file: &StoreFile) -> Result<(VersionId, Secret), StoreError> {
        match file
            .secrets
            .get(&self.key)
            .and_then(|e| labelled(e, AWSCURRENT))
        {
            Some(v) => Ok((VersionId(v.id.clone()), Secret::new(v.value.clone()))),
            None => Err(self.no_current()),
        }
    }

    fn no_current(&self) -> StoreError {
        StoreError::Missing {
            store: self.describe(),
            hint: self.import_hint(),
        }
    }

    fn import_hint(&self) -> String {
        format!(
            "put the token there with `tokenwarden import --token {}` (it reads the token from standard input)",
            self.key
        )
    }
}

/// The id of the version labelled `stage`, if any.
fn labelled<'a>(entry: &'a Entry, stage: &str) -> Option<&'a Version> {
    entry.versions.iter().find(|v| v.has(stage))
}

// The file operations are short synchronous reads and writes of one small file, as in
// `current`; the lock is only ever held for one of them.
impl SecretStore for FileStore {
    async fn current(&self) -> Result<Secret, StoreError> {
        self.current_version().await.map(|(_, s)| s)
    }

    fn describe(&self) -> String {
        format!("file store `{}` entry `{}`", self.path.display(), self.key)
    }

    async fn current_version(&self) -> Result<(VersionId, Secret), StoreError> {
        self.current_in(&self.read()?)
    }

    async fn pending(&self) -> Result<Option<(VersionId, Secret)>, StoreError> {
        let file = self.read()?;
        Ok(file
            .secrets
            .get(&self.key)
            .and_then(|e| labelled(e, AWSPENDING))
            .filter(|v| !v.has(AWSCURRENT))
            .map(|v| (VersionId(v.id.clone()), Secret::new(v.value.clone()))))
    }

    async fn previous(&self) -> Result<Option<(VersionId, Secret)>, StoreError> {
        let file = self.read()?;
        Ok(file
            .secrets
            .get(&self.key)
            .and_then(|e| labelled(e, AWSPREVIOUS))
            .map(|v| (VersionId(v.id.clone()), Secret::new(v.value.clone()))))
    }

    async fn version(&self, id: &VersionId) -> Result<Option<Secret>, StoreError> {
        let file = self.read()?;
        Ok(file
            .secrets
            .get(&self.key)
            .and_then(|e| e.versions.iter().find(|v| v.id == id.0))
            .map(|v| Secret::new(v.value.clone())))
    }

    async fn put_pending(
        &self,
        token: &Secret,
        request_token: &str,
    ) -> Result<VersionId, StoreError> {
        super::check_request_token(&self.describe(), request_token)?;
        self.modify(false, |entry| {
            if labelled(entry, AWSCURRENT).is_none() {
                return Err(self.no_current());
            }
            if let Some(v) = entry
                .versions
                .iter()
                .find(|v| v.request_token.as_deref() == Some(request_token))
            {
                // Compared, never quoted: the detail names the version only.
                return if v.value == token.expose() {
                    Ok(VersionId(v.id.clone()))
                } else {
                    Err(self.conflict(format!(
                        "request token `{request_token}` already staged version `{}` with another value",
                        v.id
                    )))
                };
            }
            for v in &mut entry.versions {
                v.remove(AWSPENDING);
            }
            // The id is the request token, as Secrets Manager's VersionId is its
            // ClientRequestToken: the same rotation names the same version in both stores.
            let id = request_token.to_string();
            entry.versions.push(Version {
                id: id.clone(),
                value: token.expose().to_string(),
                stages: vec![AWSPENDING.to_string()],
                created_at: jiff::Timestamp::now().to_string(),
                request_token: Some(request_token.to_string()),
            });
            Ok(VersionId(id))
        })
    }

    async fn promote(&self, to: &VersionId, from: &VersionId) -> Result<(), StoreError> {
        self.modify(false, |entry| {
            let Some(current) = labelled(entry, AWSCURRENT) else {
                return Err(self.no_current());
            };
            if current.id != from.0 {
                return Err(self.conflict(format!(
                    "{AWSCURRENT} is on version `{}`, not `{from}`",
                    current.id
                )));
            }
            if !entry.versions.iter().any(|v| v.id == to.0) {
                return Err(self.conflict(format!("version `{to}` no longer exists")));
            }
            if to != from {
                for v in &mut entry.versions {
                    v.remove(AWSPREVIOUS);
                    if v.id == from.0 {
                        v.remove(AWSCURRENT);
                        v.add(AWSPREVIOUS);
                    }
                }
            }
            for v in entry.versions.iter_mut().filter(|v| v.id == to.0) {
                v.remove(AWSPENDING);
                v.add(AWSCURRENT);
            }
            Ok(())
        })
    }

    async fn rollback(&self) -> Result<VersionId, StoreError> {
        self.modify(false, |entry| {
            if labelled(entry, AWSCURRENT).is_none() {
                return Err(self.no_current());
            }
            let Some(previous) = labelled(entry, AWSPREVIOUS).map(|v| v.id.clone()) else {
                return Err(
                    self.broken(format!("there is no {AWSPREVIOUS} version to roll back to"))
                );
            };
            // The lock makes this read-and-swap one step: the current version cannot change
            // between finding it and moving the label.
            for v in &mut entry.versions {
                if v.id == previous {
                    v.remove(AWSPREVIOUS);
                    v.add(AWSCURRENT);
                } else if v.has(AWSCURRENT) {
                    v.remove(AWSCURRENT);
                    v.add(AWSPREVIOUS);
                }
            }
            Ok(VersionId(previous))
        })
    }

    async fn clear_pending(&self) -> Result<(), StoreError> {
        self.modify(false, |entry| {
            for v in &mut entry.versions {
                v.remove(AWSPENDING);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> FileStore {
        FileStore::new(dir.join("tokens.json"), "prod".into())
    }

    #[tokio::test]
    async fn missing_file_says_how_to_import() {
        let dir = tempfile::tempdir().unwrap();
        let e = store(dir.path()).current().await.unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(
            e.to_string().contains("tokenwarden import --token prod"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn import_then_read_and_previous_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.import_current(
            &Secret::new("EAAfirst"),
            jiff::Timestamp::from_second(1).unwrap(),
        )
        .unwrap();
        s.import_current(
            &Secret::new("EAAsecond"),
            jiff::Timestamp::from_second(2).unwrap(),
        )
        .unwrap();
        assert_eq!(s.current().await.unwrap().expose(), "EAAsecond");
        let file = s.read().unwrap();
        let stages: Vec<_> = file.secrets["prod"]
            .versions
            .iter()
            .map(|v| v.stages.clone())
            .collect();
        assert_eq!(
            stages,
            vec![
                vec!["AWSPREVIOUS".to_string()],
                vec!["AWSCURRENT".to_string()]
            ]
        );
        assert_eq!(
            std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    /// A store another user owns used to be read like tokenwarden's own (point 26). The test
    /// gives the file away, so it needs root (or CAP_CHOWN); without it, it says so and passes
    /// only the part it can check.
    #[tokio::test]
    async fn a_store_owned_by_another_user_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.import_current(
            &Secret::new("EAAcanary"),
            jiff::Timestamp::from_second(1).unwrap(),
        )
        .unwrap();
        assert!(s.current().await.is_ok());
        if std::os::unix::fs::chown(s.path(), Some(54_321), None).is_err() {
            eprintln!("cannot chown as this user: ownership check not exercised");
            return;
        }
        let e = s.current().await.unwrap_err();
        assert!(matches!(e, StoreError::Broken { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("belongs to uid 54321"), "{text}");
        assert!(text.contains("chown"), "{text}");
        assert!(!text.contains("EAAcanary"));
    }

    #[tokio::test]
    async fn loose_permissions_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.import_current(
            &Secret::new("EAAcanary"),
            jiff::Timestamp::from_second(1).unwrap(),
        )
        .unwrap();
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = s.current().await.unwrap_err();
        assert!(matches!(e, StoreError::Broken { .. }));
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    #[tokio::test]
    async fn bad_json_is_broken_and_never_echoes_content() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        crate::fsutil::write_atomic(
            s.path(),
            br#"{"format":1,"secrets":{"prod":{"versions":[{"id":"1","value":"EAAcanary" "#,
            0o600,
        )
        .unwrap();
        let e = s.current().await.unwrap_err();
        assert!(matches!(e, StoreError::Broken { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        assert!(!e.to_string().contains("canary"), "{e}");
        crate::fsutil::write_atomic(s.path(), br#"{"format":1,"secrets":{"prod":{"versions":[{"id":"1","value":"x","stages":"EAAcanary","created_at":"t"}]}}}"#, 0o600).unwrap();
        let e = s.current().await.unwrap_err();
        assert!(e.to_string().contains("unexpected structure"), "{e}");
        assert!(!e.to_string().contains("canary"), "{e}");
        crate::fsutil::write_atomic(s.path(), br#"{"format":1,"secrets":{}}"#, 0o600).unwrap();
        assert!(matches!(
            s.current().await.unwrap_err(),
            StoreError::Missing { .. }
        ));
    }
}
