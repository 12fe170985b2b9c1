//! The file store: token versions and staging labels in one JSON file of mode 0600.
//!
//! The embedded default for one machine and the demo. The layout mirrors Secrets Manager so the
//! same rotation logic serves both:
//! `{"format":1,"secrets":{"NAME":{"versions":[{"id","value","stages":["AWSCURRENT"],"created_at"}]}}}`.
//! A file readable by group or others is refused, as ssh refuses a loose private key: the file
//! holds live tokens.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{AWSCURRENT, SecretStore, StoreError};
use crate::secret::Secret;

/// File name of the default store inside the state directory.
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
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("id", &self.id)
            .field("value", &Secret::new(self.value.clone()))
            .field("stages", &self.stages)
            .field("created_at", &self.created_at)
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
        let mut file = match self.read() {
            Ok(f) => f,
            Err(StoreError::Missing { .. }) => StoreFile {
                format: 1,
                secrets: BTreeMap::new(),
            },
            Err(e) => return Err(e),
        };
        let entry = file.secrets.entry(self.key.clone()).or_default();
        for v in &mut entry.versions {
            v.stages.retain(|s| s != "AWSPREVIOUS");
            if let Some(i) = v.stages.iter().position(|s| s == AWSCURRENT) {
                v.stages[i] = "AWSPREVIOUS".to_string();
            }
        }
        entry.versions.push(Version {
            id: format!("v{}-{}", now.as_second(), token.fingerprint()),
            value: token.expose().to_string(),
            stages: vec![AWSCURRENT.to_string()],
            created_at: now.to_string(),
        });
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| self.broken(e.to_string()))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| self.broken(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)
            .map_err(|e| self.broken(format!("cannot write `{}`: {e}", self.path.display())))
    }

    fn import_hint(&self) -> String {
        format!(
            "put the token there with `tokenwarden import --token {}` (it reads the token from standard input)",
            self.key
        )
    }
}

impl SecretStore for FileStore {
    async fn current(&self) -> Result<Secret, StoreError> {
        let file = self.read()?;
        let current = file.secrets.get(&self.key).and_then(|e| {
            e.versions
                .iter()
                .find(|v| v.stages.iter().any(|s| s == AWSCURRENT))
        });
        match current {
            Some(v) => Ok(Secret::new(v.value.clone())),
            None => Err(StoreError::Missing {
                store: self.describe(),
                hint: self.import_hint(),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("file store `{}` entry `{}`", self.path.display(), self.key)
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
