//! References to secrets: never a secret written inline in the configuration.
//!
//! A reference names where the secret lives: an environment variable, a file, or a systemd
//! credential (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY/NAME`). A plain string in
//! the config is refused with an error that shows the three allowed forms, because a secret in a
//! config file ends up in backups, diffs and support tickets.
//!
//! A secret file is read only when it is a regular file of at most [`MAX_SECRET_BYTES`], and
//! within [`READ_TIMEOUT`]: a FIFO used to block the reload forever (SIGTERM ignored), and
//! `/dev/zero` was read until memory ran out. The open itself never blocks (`O_NONBLOCK`, so a
//! FIFO without a writer is seen for what it is).

use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};

use crate::secret::Secret;

/// Where a secret is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `{ env = "NAME" }`: the environment variable `NAME`.
    Env(String),
    /// `{ file = "/path" }`: the whole file, less one trailing newline.
    File(PathBuf),
    /// `{ credential = "NAME" }`: `$CREDENTIALS_DIRECTORY/NAME`, as systemd's `LoadCredential=` provides.
    Credential(String),
}

/// Why a secret reference could not be read. Fix the environment or the config.
#[derive(Debug, thiserror::Error)]
pub enum SecretRefError {
    /// The variable is unset or empty.
    #[error("environment variable `{0}` is not set or is empty")]
    EnvMissing(String),
    /// The file could not be read.
    #[error("cannot read secret file `{path}`: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("secret file `{0}` is empty")]
    FileEmpty(PathBuf),
    /// Not a regular file (a FIFO, a device, a directory).
    #[error(
        "secret file `{0}` is not a regular file (a FIFO, a device or a directory); point the reference at a file holding only the secret"
    )]
    NotRegular(PathBuf),
    /// Larger than any secret.
    #[error(
        "secret file `{0}` is larger than {MAX_SECRET_BYTES} bytes, far more than any secret; point the reference at a file holding only the secret"
    )]
    TooLarge(PathBuf),
    /// The read did not finish in time (a hung network file system).
    #[error(
        "reading secret file `{0}` took longer than {READ_TIMEOUT:?}; is its file system hung?"
    )]
    Timeout(PathBuf),
    /// No systemd credentials directory.
    #[error(
        "credential `{0}` needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredential=; \
         outside systemd use {{ env = \"...\" }} or {{ file = \"...\" }}"
    )]
    NoCredentialsDirectory(String),
}

impl SecretRef {
    /// Reads the secret now.
    ///
    /// # Errors
    /// [`SecretRefError`] naming the variable or file (never the value).
    pub fn resolve(&self) -> Result<Secret, SecretRefError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
                _ => Err(SecretRefError::EnvMissing(name.clone())),
            },
            SecretRef::File(path) => read_file(path.clone()),
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretRefError::NoCredentialsDirectory(name.clone()))?;
                read_file(PathBuf::from(dir).join(name))
            }
        }
    }
}

/// The largest secret file read: tokens, app secrets and passwords are a few hundred bytes.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// How long reading one secret file may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn read_file(path: PathBuf) -> Result<Secret, SecretRefError> {
    // In a thread, so a read that never returns (a hung NFS server) costs a thread, not the
    // daemon's reload.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(read_capped(&p));
    });
    let mut text = match rx.recv_timeout(READ_TIMEOUT) {
        Ok(r) => r?,
        Err(_) => return Err(SecretRefError::Timeout(path)),
    };
    // Editors add a final newline; the secret never ends with one.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(SecretRefError::FileEmpty(path));
    }
    Ok(Secret::new(text))
}

/// The whole file, when it is a regular file of at most [`MAX_SECRET_BYTES`].
fn read_capped(path: &std::path::Path) -> Result<String, SecretRefError> {
    let io = |source| SecretRefError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SecretRefError::NotRegular(path.to_path_buf()));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(SecretRefError::TooLarge(path.to_path_buf()));
    }
    let mut text = String::new();
    // The cap again while reading: the file may grow after the fstat.
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretRefError::TooLarge(path.to_path_buf()));
    }
    Ok(text)
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "environment variable `{n}`"),
            SecretRef::File(p) => write!(f, "file `{}`", p.display()),
            SecretRef::Credential(n) => write!(f, "systemd credential `{n}`"),
        }
    }
}

const EXPECTED: &str =
    "a secret reference: { env = \"NAME\" }, { file = \"/path\" } or { credential = \"NAME\" }";

impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                // Never echo the value: it is probably the secret itself.
                Err(E::custom(format!(
                    "secrets are never written inline; use {EXPECTED}"
                )))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut found: Option<SecretRef> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    if value.is_empty() {
                        return Err(de::Error::custom(format!("`{key}` must not be empty")));
                    }
                    let r = match key.as_str() {
                        "env" => SecretRef::Env(value),
                        "file" => SecretRef::File(PathBuf::from(value)),
                        "credential" => SecretRef::Credential(value),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["env", "file", "credential"],
                            ));
                        }
                    };
                    if found.replace(r).is_some() {
                        return Err(de::Error::custom(format!(
                            "give exactly one of env, file or credential, not several; {EXPECTED}"
                        )));
                    }
                }
                found.ok_or_else(|| {
                    de::Error::custom(format!("empty reference; expected {EXPECTED}"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_reference_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(
            SecretRef::File(p.clone()).resolve().unwrap().expose(),
            "abc"
        );
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            SecretRef::File(p).resolve(),
            Err(SecretRefError::FileEmpty(_))
        ));
    }

    /// A FIFO used to block the read forever, and `/dev/zero` to be read until memory ran
    /// out. Each is refused at once now (the whole test is bounded, so a regression fails it
    /// rather than hanging the suite).
    #[test]
    fn fifos_devices_and_huge_files_are_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let huge = dir.path().join("huge");
        std::fs::write(&huge, vec![b'a'; MAX_SECRET_BYTES as usize + 1]).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let results: Vec<String> = [fifo, PathBuf::from("/dev/zero"), huge]
                .into_iter()
                .map(|p| match SecretRef::File(p).resolve() {
                    Ok(_) => "read".to_string(),
                    Err(e) => e.to_string(),
                })
                .collect();
            let _ = tx.send(results);
        });
        let results = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("every read returns");
        assert!(results[0].contains("not a regular file"), "{results:?}");
        assert!(results[1].contains("not a regular file"), "{results:?}");
        assert!(
            results[2].contains("larger than 65536 bytes"),
            "{results:?}"
        );
        // A secret of the largest size still reads.
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_BYTES as usize]).unwrap();
        assert_eq!(
            SecretRef::File(big).resolve().unwrap().expose().len(),
            MAX_SECRET_BYTES as usize
        );
    }

    #[test]
    fn missing_env_names_the_variable_not_a_value() {
        let e = SecretRef::Env("TOKENWARDEN_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("TOKENWARDEN_TEST_SURELY_UNSET"));
    }
}
