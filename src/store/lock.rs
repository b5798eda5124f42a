//! File locks: one per step key, and the store-wide writer/gc lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::Path;

use crate::hash::Digest;

use super::StoreError;

/// Holds the lock of one step key; released on drop. While held, the lock file lists the
/// digests the step depends on, so `gc` keeps them.
#[derive(Debug)]
pub(crate) struct StepLock {
    _file: Option<File>,
}

impl StepLock {
    /// A lock that guards nothing (the in-memory store locks in-process).
    #[cfg(test)]
    pub(crate) fn in_memory() -> Self {
        Self { _file: None }
    }
}

/// Holds the store-wide lock, shared (writers) or exclusive (gc).
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    // Never truncate before holding the lock: the current holder's content must survive.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::io("open the lock", path, e))
}

fn lock_error(path: &Path, source: std::io::Error) -> StoreError {
    match source.kind() {
        std::io::ErrorKind::Unsupported => StoreError::LockUnavailable { path: path.to_owned(), source },
        _ if source.raw_os_error() == Some(37) /* ENOLCK */ => {
            StoreError::LockUnavailable { path: path.to_owned(), source }
        }
        _ => StoreError::io("lock", path, source),
    }
}

/// Takes the step lock at `path` if it is free, then records `deps` in it. `Ok(None)`: held
/// by someone else.
pub(crate) fn try_lock_step(path: &Path, deps: &[Digest]) -> Result<Option<StepLock>, StoreError> {
    if let Some(error) = crate::failpoint::error("flock") {
        return Err(lock_error(path, error));
    }
    let mut file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => return Err(lock_error(path, e)),
    }
    file.set_len(0)
        .map_err(|e| StoreError::io("reset the lock", path, e))?;
    let text: String = deps.iter().fold(String::new(), |mut text, d| {
        text.push_str(&d.to_string());
        text.push('\n');
        text
    });
    file.write_all(text.as_bytes())
        .map_err(|e| StoreError::io("write the lock", path, e))?;
    Ok(Some(StepLock { _file: Some(file) }))
}

/// Whether the step lock at `path` is held by someone; if so, the digests it lists.
pub(crate) fn held_step_lock(path: &Path) -> Result<Option<Vec<Digest>>, StoreError> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| StoreError::io("read the lock", path, e))?;
            Ok(Some(text.lines().filter_map(|l| l.parse().ok()).collect()))
        }
        Err(TryLockError::Error(e)) => Err(lock_error(path, e)),
    }
}

/// The store-wide lock at `path`, exclusive, if no other process holds it at all.
pub(crate) fn try_lock_store_exclusive(path: &Path) -> Result<Option<StoreLock>, StoreError> {
    if let Some(error) = crate::failpoint::error("flock") {
        return Err(lock_error(path, error));
    }
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(StoreLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(lock_error(path, e)),
    }
}

/// Takes the store-wide lock at `path`: shared for writers, exclusive for gc. Blocks.
pub(crate) fn lock_store_blocking(path: &Path, exclusive: bool) -> Result<StoreLock, StoreError> {
    if let Some(error) = crate::failpoint::error("flock") {
        return Err(lock_error(path, error));
    }
    let file = open_lock_file(path)?;
    let result = if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    };
    result.map_err(|e| lock_error(path, e))?;
    Ok(StoreLock { _file: file })
}
