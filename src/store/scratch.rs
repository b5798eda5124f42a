//! Scratch space in the store's `tmp/`, safe from `gc`: every directory or file handed out
//! here is locked (`flock`, exclusive) for as long as its owner holds it, and `gc` removes
//! only entries whose lock it can take — the leftovers of killed processes. Creation happens
//! under the shared store lock, so `gc` (exclusive) never sees an entry between its creation
//! and its lock.

use std::fs::File;
use std::path::Path;

use super::{LocalStore, StoreError};

/// A directory under `tmp/`, removed (and unlocked) when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    // Fields drop in order: the directory goes, then its lock.
    dir: tempfile::TempDir,
    _lock: File,
}

impl ScratchDir {
    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A file under `tmp/`, removed (and unlocked) when dropped.
#[derive(Debug)]
pub(crate) struct ScratchFile {
    file: tempfile::NamedTempFile,
}

impl ScratchFile {
    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        self.file.path()
    }

    /// The open file.
    pub(crate) fn as_file(&self) -> &File {
        self.file.as_file()
    }
}

impl LocalStore {
    /// A fresh directory under `tmp/` named `<prefix><random>`, left alone by `gc` while held.
    pub(crate) fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir, StoreError> {
        let tmp = self.tmp_dir();
        let _writers = self.lock_store_sync(false)?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(|e| StoreError::io("create a scratch directory in", &tmp, e))?;
        let lock = File::open(dir.path()).map_err(|e| StoreError::io("open", dir.path(), e))?;
        lock.lock()
            .map_err(|e| StoreError::io("lock", dir.path(), e))?;
        Ok(ScratchDir { dir, _lock: lock })
    }

    /// A fresh file under `tmp/` named `<prefix><random>`, left alone by `gc` while held.
    pub(crate) fn scratch_file(&self, prefix: &str) -> Result<ScratchFile, StoreError> {
        let tmp = self.tmp_dir();
        let _writers = self.lock_store_sync(false)?;
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&tmp)
            .map_err(|e| StoreError::io("create a scratch file in", &tmp, e))?;
        file.as_file()
            .lock()
            .map_err(|e| StoreError::io("lock", file.path(), e))?;
        Ok(ScratchFile { file })
    }
}

/// Whether a `tmp/` entry is held by a live owner (its lock cannot be taken). An entry that
/// cannot even be opened is not in use.
pub(super) fn in_use(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_leaves_held_scratch_alone_and_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let held = store.scratch_dir("kiln-push-").unwrap();
        std::fs::write(held.path().join("repo"), b"in use").unwrap();
        let held_file = store.scratch_file("tree-").unwrap();
        // What a killed process left: no one holds it.
        let leftover = store.tmp_dir().join("kiln-verify-dead");
        std::fs::create_dir(&leftover).unwrap();
        let report = super::super::gc(&store, &super::super::GcOptions::default()).unwrap();
        assert!(
            held.path().join("repo").is_file(),
            "gc removed a live scratch directory"
        );
        assert!(held_file.path().is_file(), "gc removed a live scratch file");
        assert!(!leftover.exists(), "gc kept a leftover");
        assert_eq!(report.leftovers_removed, 1);
        let held_path = held.path().to_owned();
        drop(held);
        drop(held_file);
        assert!(!held_path.exists());
    }
}
