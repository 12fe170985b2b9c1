//! References to secrets: never a secret written inline in the configuration.
//!
//! A reference names where the secret lives: an environment variable, a file, or a systemd
//! credential (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY/NAME`). A plain string in
//! the config is refused with an error that shows the three allowed forms, because a secret in a
//! config file ends up in backups, diffs and support tickets.

use std::fmt;
use std::path::PathBuf;

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

fn read_file(path: PathBuf) -> Result<Secret, SecretRefError> {
    let mut text = std::fs::read_to_string(&path).map_err(|source| SecretRefError::File {
        path: path.clone(),
        source,
    })?;
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

    #[test]
    fn missing_env_names_the_variable_not_a_value() {
        let e = SecretRef::Env("TOKENWARDEN_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("TOKENWARDEN_TEST_SURELY_UNSET"));
    }
}
