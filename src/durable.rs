//! Publishing a file whole and durably: the bytes go to a temporary file, which is fsynced,
//! given its mode, renamed over the target and the target's directory fsynced. A crash at any
//! point leaves the old file or the new one, never a torn or empty one (after a power loss
//! too: the rename is not durable until its directory is synced). Every file kiln writes for
//! a user (lockfiles, base locks, go.mod edits, KDM and channel files) and every store file
//! that is not a blob goes through here.

use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Mode of a new file: readable by everyone, like any source file.
const NEW_FILE_MODE: u32 = 0o644;

/// Where the temporary file is made, and the mode the published file gets.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placement<'a> {
    /// Beside the target; a target that exists keeps its mode, a new one gets 0644.
    Beside,
    /// In `dir` (same filesystem as the target), with `mode`: the store's `tmp/`.
    Via {
        /// The directory.
        dir: &'a Path,
        /// The mode.
        mode: u32,
    },
}

/// Which part of a durable write failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot {action} {path}")]
pub(crate) struct WriteError {
    /// What was being done.
    pub(crate) action: &'static str,
    /// The file or directory.
    pub(crate) path: std::path::PathBuf,
    /// Why.
    #[source]
    pub(crate) source: std::io::Error,
}

/// Replaces `path` with `bytes` atomically and durably (the module's contract).
pub(crate) fn write(path: &Path, bytes: &[u8], placement: Placement<'_>) -> Result<(), WriteError> {
    let fail = |action: &'static str, at: &Path| {
        let at = at.to_owned();
        move |source| WriteError {
            action,
            path: at,
            source,
        }
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp_dir, mode) = match placement {
        Placement::Beside => {
            let mode =
                fs::metadata(path).map_or(NEW_FILE_MODE, |m| m.permissions().mode() & 0o7777);
            (parent, mode)
        }
        Placement::Via { dir, mode } => (dir, mode),
    };
    // The store's tmp/ (`Via`) is cleaned under the store's exclusive lock instead.
    if matches!(placement, Placement::Beside) {
        remove_dead_writes(tmp_dir);
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(tmp_dir)
        .map_err(fail("create a temporary file in", tmp_dir))?;
    // Locked while it is written: a killed writer's file is unlocked, and a later write in
    // this directory removes it (see `remove_dead_writes`). Where files cannot be locked
    // (some network file systems), the write goes on: only the clean-up is lost.
    if let Err(error) = tmp.as_file().lock() {
        tracing::debug!(path = %tmp.path().display(), %error, "cannot lock a temporary file");
    }
    tmp.write_all(bytes).map_err(fail("write", path))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(fail("set the mode of", path))?;
    tmp.as_file().sync_all().map_err(fail("sync", path))?;
    crate::failpoint::hit("before-rename");
    tmp.persist(path)
        .map_err(|e| fail("replace", path)(e.error))?;
    sync_dir(parent)
}

/// How kiln's temporary files start.
const TMP_PREFIX: &str = ".kiln-write-";

/// How old an unlocked temporary file must be before it counts as a dead writer's: a live
/// writer holds its lock from moments after creating it, and is never this slow to.
const DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the temporary files of writes in `dir` whose process died (kill -9, power loss):
/// those older than [`DEAD_AFTER`] that nobody holds locked. A live write's file is locked
/// (or new) and stays.
fn remove_dead_writes(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TMP_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > DEAD_AFTER);
        if !old {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if file.try_lock().is_ok() {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Makes a rename into (or a file creation in) `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError {
            action: "sync the directory",
            path: dir.to_owned(),
            source,
        })
}

/// `fs::create_dir_all`, and every directory it created synced into its parent, so a blob or
/// record renamed into a new prefix directory survives a power loss with its directory.
pub(crate) fn create_dir_all(dir: &Path) -> Result<(), WriteError> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_owned());
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    fs::create_dir_all(dir).map_err(|source| WriteError {
        action: "create",
        path: dir.to_owned(),
        source,
    })?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_keeping_an_existing_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("go.mod");
        write(&path, b"first\n", Placement::Beside).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write(&path, b"second\n", Placement::Beside).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn writes_via_another_directory_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let path = dir.path().join("records/a/b.json");
        create_dir_all(path.parent().unwrap()).unwrap();
        write(
            &path,
            b"{}",
            Placement::Via {
                dir: &tmp,
                mode: 0o444,
            },
        )
        .unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"old").unwrap();
        let missing = dir.path().join("no-such-dir");
        let error = write(
            &path,
            b"new",
            Placement::Via {
                dir: &missing,
                mode: 0o644,
            },
        )
        .unwrap_err();
        assert_eq!(error.action, "create a temporary file in");
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
