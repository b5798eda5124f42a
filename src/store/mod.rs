//! The content-addressed store: blobs named by their SHA-256, step records keyed by
//! [`StepKey`], per-step locks. Owns the on-disk layout (see [`LocalStore`]), `verify` and
//! `gc`. It knows nothing about what steps do.
//!
//! Backends implement [`Store`]: [`LocalStore`] on a filesystem, [`MemoryStore`] for tests;
//! both pass one conformance suite (`conformance.rs`).

mod error;
mod gc;
mod local;
mod lock;
#[cfg(test)]
mod memory;
mod record;
mod scratch;
mod tree;
mod verify;

#[cfg(test)]
mod conformance;

use std::future::Future;
use std::path::Path;

pub use error::StoreError;
pub(crate) use gc::{GcOptions, gc};
pub use local::LocalStore;
pub(crate) use lock::{StepLock, StoreLock};
#[cfg(test)]
pub(crate) use memory::MemoryStore;
pub use record::{OutputRef, Record};
pub(crate) use scratch::ScratchDir;
pub(crate) use tree::{pack_tree, tree_manifest, unpack_tree};
pub(crate) use verify::verify;

use crate::hash::{Digest, StepKey};

/// Content-addressed blob and record storage. The store computes digests; callers never pass
/// one in. Putting bytes that are already stored is a no-op. Implementations are cheap to
/// clone. Every method that hands bytes out verifies them first.
pub(crate) trait Store: Clone + Send + Sync + 'static {
    /// Held while a step's outputs are written and recorded; see [`Store::writing`].
    type Writing: Send;

    /// Whether the blob is stored.
    fn contains(&self, digest: &Digest) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores the file at `path`; returns its digest and size.
    fn put_file(
        &self,
        path: &Path,
    ) -> impl Future<Output = Result<(Digest, u64), StoreError>> + Send;

    /// Stores the directory at `path` as a tree (canonical tar).
    fn put_tree(
        &self,
        path: &Path,
    ) -> impl Future<Output = Result<(Digest, u64), StoreError>> + Send;

    /// Writes the blob to the new file `dest`, verified. `Ok(false)`: not stored.
    fn export(
        &self,
        digest: &Digest,
        dest: &Path,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Unpacks the tree blob into the empty directory `dest`, verified. `Ok(false)`: not stored.
    fn unpack(
        &self,
        digest: &Digest,
        dest: &Path,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The record of `key`. `Ok(None)`: none (a damaged one counts as none, with a warning).
    fn record(
        &self,
        key: &StepKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// The latest record of a step with this name, for explaining rebuilds.
    fn latest(&self, name: &str)
    -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Writes a record; every output it names must already be stored.
    fn put_record(&self, record: &Record) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Waits until this process holds the lock of `key`, then notes `deps` (the digests the
    /// step reads) so that `gc` keeps them. Released on drop.
    fn lock_step(
        &self,
        key: &StepKey,
        deps: &[Digest],
    ) -> impl Future<Output = Result<StepLock, StoreError>> + Send;

    /// [`Store::lock_step`] without waiting: `Ok(None)` when another run holds the lock.
    fn try_lock_step(
        &self,
        key: &StepKey,
        deps: &[Digest],
    ) -> impl Future<Output = Result<Option<StepLock>, StoreError>> + Send;

    /// Marks a write in progress (first output blob to record) so `gc` waits for it.
    fn writing(&self) -> impl Future<Output = Result<Self::Writing, StoreError>> + Send;
}

/// Largest tree kiln unpacks (16 GiB): a bound against decompression bombs.
pub(crate) const MAX_TREE_BYTES: u64 = 16 << 30;

impl Store for LocalStore {
    type Writing = StoreLock;

    async fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.contains_sync(digest))
    }

    async fn put_file(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let (store, path) = (self.clone(), path.to_owned());
        blocking(move || store.put_file_sync(&path)).await
    }

    async fn put_tree(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let (store, path) = (self.clone(), path.to_owned());
        blocking(move || {
            // Pack into a temp file first: the tar is hashed as it is stored.
            let tmp = store.scratch_file("tree-")?;
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            pack_tree(&path, &mut writer)?;
            std::io::Write::flush(&mut writer)
                .map_err(|e| StoreError::io("write", tmp.path(), e))?;
            drop(writer);
            store.put_file_sync(tmp.path())
        })
        .await
    }

    async fn export(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        let (store, digest, dest) = (self.clone(), *digest, dest.to_owned());
        blocking(move || store.export_sync(&digest, &dest)).await
    }

    async fn unpack(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        let (store, digest, dest) = (self.clone(), *digest, dest.to_owned());
        blocking(move || store.unpack_sync(&digest, &dest, MAX_TREE_BYTES)).await
    }

    async fn record(&self, key: &StepKey) -> Result<Option<Record>, StoreError> {
        self.record_sync(key)
    }

    async fn latest(&self, name: &str) -> Result<Option<Record>, StoreError> {
        self.latest_sync(name)
    }

    async fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        let (store, record) = (self.clone(), record.clone());
        blocking(move || store.put_record_sync(&record)).await
    }

    async fn lock_step(&self, key: &StepKey, deps: &[Digest]) -> Result<StepLock, StoreError> {
        let (store, key, deps) = (self.clone(), *key, deps.to_vec());
        blocking(move || store.lock_step_sync(&key, &deps)).await
    }

    async fn try_lock_step(
        &self,
        key: &StepKey,
        deps: &[Digest],
    ) -> Result<Option<StepLock>, StoreError> {
        let (store, key, deps) = (self.clone(), *key, deps.to_vec());
        blocking(move || store.try_lock_step_sync(&key, &deps)).await
    }

    async fn writing(&self) -> Result<StoreLock, StoreError> {
        let store = self.clone();
        blocking(move || store.lock_store_sync(false)).await
    }
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("store work does not panic")
}
