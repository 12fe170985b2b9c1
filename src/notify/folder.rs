//! The folder mailer: each email becomes `<dir>/<id>.eml`, exactly as SMTP would carry it.
//!
//! Used by the demo and for dry runs: open the files with any mail client.

use std::path::PathBuf;

use lettre::message::Mailbox;

use super::{Email, NotifyError, SendFailure, message};

/// Writes emails as `.eml` files into a directory.
#[derive(Debug)]
pub struct FolderMailer {
    path: PathBuf,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl FolderMailer {
    pub(super) fn new(
        path: PathBuf,
        from: &str,
        to: &[String],
    ) -> Result<FolderMailer, NotifyError> {
        let (from, to) = message::parse_addresses(from, to)?;
        Ok(FolderMailer { path, from, to })
    }

    /// The directory the files go to.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `folder /dir to a@x, b@y`.
    pub fn describe(&self) -> String {
        let to: Vec<String> = self.to.iter().map(|m| m.email.to_string()).collect();
        format!("folder {} to {}", self.path.display(), to.join(", "))
    }

    pub(super) async fn send(&self, email: &Email) -> Result<(), SendFailure> {
        let msg = message::build(email, &self.from, &self.to).map_err(|error| SendFailure {
            error,
            server_wide: false,
        })?;
        let file = self.path.join(format!("{}.eml", email.id));
        let dir = self.path.clone();
        let bytes = msg.formatted();
        // Blocking file IO off the async worker; the same id overwrites the same file, so a
        // repeated send leaves one email.
        let written = tokio::task::spawn_blocking(move || {
            crate::fsutil::create_private_dir(&dir)?;
            crate::fsutil::write_atomic(&file, &bytes, 0o600)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        written.map_err(|e| SendFailure {
            error: NotifyError::Transient(format!(
                "cannot write to `{}`: {e}",
                self.path.display()
            )),
            server_wide: true,
        })
    }
}
