//! Atomic file writes, private directories and tokenwarden's own temporary files.
//!
//! A write goes to a temp file in the same directory, is fsynced, renamed over the file, and
//! the directory is fsynced: a reader (or a crash) sees the old file or the new one, never half
//! of either. Used for the file store, the state directory and (through [`temp_in`]) the dotenv
//! target.
//!
//! A temp file is created with `O_EXCL` (so never through a file or symlink someone placed at
//! its name), under a random name `.<file>.tokenwarden-<random>.tmp`, and locked (`flock`) for as
//! long as it is being written. A process killed mid-write leaves it behind, unlocked: the
//! recognisable name lets [`remove_stale_temps`] find and delete it (the daemon at start; a
//! write first sweeps its directory, at most every ten minutes per directory), and the lock
//! tells it apart from a temp file another process is writing right now.
//!
//! Directories tokenwarden creates are mode 0700 whatever the umask ([`create_private_dir`]),
//! and a state directory that group or others may write is refused ([`check_private_dir`]):
//! whoever can write it can plant files where tokenwarden writes.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What marks a file as one of tokenwarden's temp files: `.<file>` + this + random + `.tmp`.
pub const TEMP_MARK: &str = ".tokenwarden-";
/// The suffix of a temp file.
pub const TEMP_SUFFIX: &str = ".tmp";

/// A temp file younger than this is never removed as stale, locked or not: it covers the
/// instant between its creation and its writer's lock.
const STALE_AFTER: Duration = Duration::from_secs(10);

/// Writes `bytes` to `path` atomically with file mode `mode`.
///
/// # Errors
/// Any IO error; on error the original file is untouched and the temp file removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomic_with(path, mode, |w| w.write_all(bytes))
}

/// [`write_atomic`] for content written piece by piece (a large state serialized straight
/// into the file, with no copy of it in memory).
///
/// # Errors
/// Any IO error, `write`'s included; on error the original file is untouched.
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    sweep_now_and_then(dir);
    // Dropped (and so removed) on every error below.
    let tmp = temp_in(dir, &name.to_string_lossy())?;
    // The umask may have narrowed the mode; set it exactly.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    let mut buffered = std::io::BufWriter::new(tmp.as_file());
    write(&mut buffered)?;
    buffered
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A new temp file for `name` in `dir`: created exclusively (never following a symlink), mode
/// 0600, a random name carrying [`TEMP_MARK`], and locked until it is dropped or persisted and
/// closed, so [`remove_stale_temps`] leaves it alone. Removed when dropped unpersisted.
///
/// # Errors
/// The file cannot be created.
pub fn temp_in(dir: &Path, name: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TEMP_MARK}"))
        .suffix(TEMP_SUFFIX)
        .rand_bytes(12)
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    // Only fails when a cleaner holds it for the instant it takes to look; the file is
    // younger than STALE_AFTER then, so it is not removed either way.
    let _ = tmp.as_file().try_lock();
    Ok(tmp)
}

/// Removes tokenwarden's temp files in `dir` that no process is writing: those of `name` only,
/// or every one when `name` is `None`. A temp file left by a kill can hold a token, in a
/// directory an application reads. Returns how many were removed; errors are ignored (the
/// next attempt retries) and only logged.
pub fn remove_stale_temps(dir: &Path, name: Option<&str>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let ours = match name {
            Some(n) => file_name
                .strip_prefix(&format!(".{n}{TEMP_MARK}"))
                .is_some_and(|rest| rest.ends_with(TEMP_SUFFIX)),
            None => {
                file_name.starts_with('.')
                    && file_name.contains(TEMP_MARK)
                    && file_name.ends_with(TEMP_SUFFIX)
            }
        };
        if !ours {
            continue;
        }
        let path = entry.path();
        if is_stale(&path) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
            tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write");
        }
    }
    removed
}

/// How often [`write_atomic`] sweeps one directory for stale temp files. Not at every write:
/// `targets/` holds a file per token, and listing ten thousand entries before each of ten
/// thousand writes would cost more than the writes.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// [`remove_stale_temps`] over all of `dir`, when this process has not done it in the last
/// [`SWEEP_EVERY`]: before a write into `dir`.
pub fn sweep_now_and_then(dir: &Path) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: Mutex<Option<HashMap<std::path::PathBuf, Instant>>> = Mutex::new(None);
    let due = {
        let mut last = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = last.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        match map.get(dir) {
            Some(at) if now.duration_since(*at) < SWEEP_EVERY => false,
            _ => {
                map.insert(dir.to_path_buf(), now);
                true
            }
        }
    };
    if due {
        remove_stale_temps(dir, None);
    }
}

/// A regular file older than [`STALE_AFTER`] whose lock nobody holds.
fn is_stale(path: &Path) -> bool {
    // No symlink following, and never blocking (on a FIFO someone named like a temp file).
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    let Ok(meta) = f.metadata() else {
        return false;
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age >= STALE_AFTER);
    meta.is_file() && old && f.try_lock().is_ok()
}

/// Creates `dir` (and missing parents) with mode 0700, whatever the umask. An existing
/// directory is left as it is.
///
/// # Errors
/// The directory cannot be created.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // `mode` is only ever narrowed by the umask, never widened (0777 under umask 000 was the
    // problem of `create_dir_all`); the chmod makes it exactly 0700.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Refuses a directory that group or others may write (without the sticky bit's protection it
/// would not help either: tokenwarden writes there by name). A missing directory passes: it
/// will be created 0700.
///
/// # Errors
/// A message that names the directory, its mode and the fix.
pub fn check_private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.mode() & 0o022 != 0 => Err(format!(
            "state directory `{}` is writable by group or others (mode {:03o}): another local user \
             could plant files where tokenwarden writes tokens; run `chmod 700 {}`",
            dir.display(),
            m.mode() & 0o777,
            dir.display()
        )),
        Ok(m) if !m.is_dir() => Err(format!(
            "state directory `{}` is not a directory",
            dir.display()
        )),
        _ => Ok(()),
    }
}

/// The effective user id of this process (the owner of `/proc/self`, which the kernel gives the
/// process's effective ids), or `None` without `/proc`. The crate has no unsafe code, so no
/// `geteuid` call.
pub fn current_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left behind"
        );
    }

    /// The old temp name was `.<file>.tmp.<pid>`, opened without `O_EXCL`: a symlink planted
    /// there made the write go through it (and chmod its target). Plant the link at every
    /// name the old scheme could pick for this process, and at the file itself's neighbours.
    #[test]
    fn a_symlink_at_a_predictable_temp_name_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = dir.path().join("state.json");
        let planted = dir
            .path()
            .join(format!(".state.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        write_atomic(&p, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().mode() & 0o777,
            0o644,
            "the victim's mode must not change"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_file());
    }

    #[test]
    fn temp_names_are_random_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let a = temp_in(dir.path(), "x.json").unwrap();
        let b = temp_in(dir.path(), "x.json").unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with(".x.json.tokenwarden-") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(std::fs::metadata(a.path()).unwrap().mode() & 0o777, 0o600);
    }

    fn age(path: &Path, secs: u64) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn stale_temps_are_removed_but_not_one_being_written_or_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Left by a kill: unlocked and old.
        let stale = d.join(".tokens.json.tokenwarden-abc123.tmp");
        std::fs::write(&stale, "EAAleftover").unwrap();
        age(&stale, 600);
        // Being written by another process: locked (and old, a slow writer).
        let live = temp_in(d, "tokens.json").unwrap();
        age(live.path(), 600);
        let live_path = live.path().to_path_buf();
        // Not ours.
        let other = d.join(".tokens.json.swp");
        std::fs::write(&other, "x").unwrap();
        age(&other, 600);
        // Ours but just created: may be between creation and its lock.
        let young = d.join(".tokens.json.tokenwarden-young.tmp");
        std::fs::write(&young, "x").unwrap();
        // Another file's: only removed by the sweep over the whole directory.
        let other_file = d.join(".state.json.tokenwarden-zzz.tmp");
        std::fs::write(&other_file, "x").unwrap();
        age(&other_file, 600);

        // The lock is per open file: a second descriptor in this process stands for another
        // process's cleaner.
        assert_eq!(remove_stale_temps(d, Some("tokens.json")), 1);
        assert!(!stale.exists());
        assert!(live_path.exists() && other.exists() && young.exists() && other_file.exists());
        assert_eq!(remove_stale_temps(d, None), 1);
        assert!(!other_file.exists());
        drop(live);
    }

    #[test]
    fn write_atomic_removes_a_stale_temp_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".f.json.tokenwarden-dead.tmp");
        std::fs::write(&stale, "EAAleftover").unwrap();
        age(&stale, 600);
        write_atomic(&dir.path().join("f.json"), b"x", 0o600).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn loose_state_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        assert!(
            check_private_dir(&d).is_ok(),
            "a missing one is created later"
        );
        create_private_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        assert!(check_private_dir(&d).is_ok());
        for mode in [0o770, 0o707, 0o777] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_private_dir(&d).unwrap_err();
            assert!(e.contains("chmod 700"), "{e}");
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(check_private_dir(&d).is_ok(), "group may read");
    }
}
