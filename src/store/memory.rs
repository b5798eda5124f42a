//! [`MemoryStore`]: the store in memory, for unit tests of the engine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::hash::{Digest, StepKey};

use super::{Record, StepLock, Store, StoreError, pack_tree};

#[derive(Default, Debug)]
struct Inner {
    blobs: HashMap<Digest, Vec<u8>>,
    records: HashMap<StepKey, Record>,
    names: HashMap<String, StepKey>,
}

/// Blobs and records in memory. Step locks are held by the current process anyway: the
/// in-memory store is never shared between processes.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("memory store lock poisoned"))
    }

    fn put_bytes(&self, bytes: Vec<u8>) -> (Digest, u64) {
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        // Replacing also repairs a corrupted copy.
        self.with(|inner| inner.blobs.insert(digest, bytes));
        (digest, size)
    }

    /// Test hook: overwrite a blob's bytes, as a disk error would.
    pub(crate) fn corrupt(&self, digest: &Digest, bytes: Vec<u8>) {
        self.with(|inner| inner.blobs.insert(*digest, bytes));
    }

    fn verified(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(bytes) = self.with(|inner| inner.blobs.get(digest).cloned()) else {
            return Ok(None);
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            self.with(|inner| inner.blobs.remove(digest));
            return Err(StoreError::Corrupt {
                digest: *digest,
                actual,
                path: "memory".into(),
            });
        }
        Ok(Some(bytes))
    }
}

impl Store for MemoryStore {
    type Writing = ();

    async fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|inner| inner.blobs.contains_key(digest)))
    }

    async fn put_file(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let bytes = std::fs::read(path).map_err(|e| StoreError::io("read", path, e))?;
        Ok(self.put_bytes(bytes))
    }

    async fn put_tree(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let mut bytes = Vec::new();
        pack_tree(path, &mut bytes)?;
        Ok(self.put_bytes(bytes))
    }

    async fn export(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        let Some(bytes) = self.verified(digest)? else {
            return Ok(false);
        };
        std::fs::write(dest, bytes).map_err(|e| StoreError::io("write", dest, e))?;
        Ok(true)
    }

    async fn unpack(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        let Some(bytes) = self.verified(digest)? else {
            return Ok(false);
        };
        super::tree::unpack_tree_sized(
            &bytes[..],
            bytes.len() as u64,
            dest,
            super::MAX_TREE_BYTES,
            &digest.to_string(),
        )?;
        Ok(true)
    }

    async fn record(&self, key: &StepKey) -> Result<Option<Record>, StoreError> {
        // As on disk: a record whose blob is gone is a miss.
        Ok(self.with(|inner| {
            inner
                .records
                .get(key)
                .filter(|r| {
                    r.outputs
                        .values()
                        .all(|o| inner.blobs.contains_key(&o.digest))
                })
                .cloned()
        }))
    }

    async fn latest(&self, name: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.with(|inner| {
            inner
                .names
                .get(name)
                .and_then(|k| inner.records.get(k))
                .cloned()
        }))
    }

    async fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        self.with(|inner| {
            for (name, output) in &record.outputs {
                if !inner.blobs.contains_key(&output.digest) {
                    return Err(StoreError::MissingOutput {
                        key: record.key.to_string(),
                        output: name.clone(),
                        digest: output.digest,
                    });
                }
            }
            inner.records.insert(record.key, record.clone());
            inner.names.insert(record.name.clone(), record.key);
            Ok(())
        })
    }

    async fn lock_step(&self, _key: &StepKey, _deps: &[Digest]) -> Result<StepLock, StoreError> {
        Ok(StepLock::in_memory())
    }

    async fn try_lock_step(
        &self,
        _key: &StepKey,
        _deps: &[Digest],
    ) -> Result<Option<StepLock>, StoreError> {
        Ok(Some(StepLock::in_memory()))
    }

    async fn writing(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
