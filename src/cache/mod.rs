//! Caching across captains: a second store layer in any OCI registry. A laptop reads from it;
//! only holders of a signing key write to it; a reader uses a record only when one of its
//! trusted keys signed it for that very step, and only after every blob hashed right.
//!
//! [`CachedStore`] is the layered store the engine runs on: the local store first, then the
//! registry; a remote hit is verified and written into the local store before it is used. The
//! registry being down, slow or failing is a warning and a local build, never a failed run.

mod remote;
mod sign;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use remote::{Lookup, RemoteCache};
pub(crate) use remote::{is_loopback, is_not_found};
pub use sign::{PublicKey, SecretKey, SignedRecord, keygen};

use crate::hash::{Digest, StepKey};
use crate::store::{LocalStore, Record, StepLock, Store, StoreError, StoreLock};

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CacheError {
    /// A signing key file others may read.
    #[error("the signing key {} can be read by others (mode {mode:o})", path.display())]
    #[diagnostic(
        code(kiln::cache::key_readable),
        help("make it private: `chmod 600 {}`; if others could read it, make a new key", path.display())
    )]
    KeyReadable {
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The cache URL is not `oci://HOST[:PORT]/REPO`.
    #[error("`{url}` is not a cache URL: {why}")]
    #[diagnostic(
        code(kiln::cache::bad_url),
        help("write it as oci://HOST[:PORT]/REPO, e.g. oci://registry.example.com/k3s/kiln-cache")
    )]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// A key is not a kiln key.
    #[error("`{key}` is not a kiln ed25519 key")]
    #[diagnostic(
        code(kiln::cache::bad_key),
        help(
            "public keys look like ed25519:<base64>, as `kiln cache keygen` prints them; \
              signing keys are the files it writes"
        )
    )]
    BadKey {
        /// The key or the file.
        key: String,
    },
    /// The registry did not answer.
    #[error("the cache registry {registry} is unreachable: {reason}")]
    #[diagnostic(code(kiln::cache::unreachable))]
    Unreachable {
        /// The registry.
        registry: String,
        /// What failed.
        reason: String,
    },
    /// A blob to publish is not in the local store.
    #[error("{digest} is not in the local store")]
    #[diagnostic(
        code(kiln::cache::not_local),
        help("publish from the store the release ran in")
    )]
    NotLocal {
        /// The blob.
        digest: Digest,
    },
    /// Local trouble.
    #[error("cannot {action} {path}")]
    Io {
        /// What.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Store trouble.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] StoreError),
}

/// The local store with a registry behind it. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct CachedStore {
    local: LocalStore,
    remote: Option<Arc<RemoteCache>>,
}

impl CachedStore {
    /// `local`, backed by `remote` when given.
    #[must_use]
    pub(crate) fn new(local: LocalStore, remote: Option<Arc<RemoteCache>>) -> Self {
        Self { local, remote }
    }
}

impl Store for CachedStore {
    type Writing = StoreLock;

    async fn contains(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.local.contains(digest).await
    }

    async fn put_file(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        self.local.put_file(path).await
    }

    async fn put_tree(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        self.local.put_tree(path).await
    }

    async fn export(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        self.local.export(digest, dest).await
    }

    async fn unpack(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        self.local.unpack(digest, dest).await
    }

    async fn record(&self, key: &StepKey) -> Result<Option<Record>, StoreError> {
        if let Some(record) = self.local.record(key).await? {
            return Ok(Some(record));
        }
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        match remote.fetch(key, &self.local).await {
            Ok(Lookup::Hit(record)) => {
                tracing::info!(%key, "restored from the shared cache");
                Ok(Some(*record))
            }
            Ok(Lookup::Miss) => Ok(None),
            Ok(Lookup::Rejected(why)) => {
                tracing::warn!("shared cache: ignoring a record: {why}");
                Ok(None)
            }
            Err(error) => {
                tracing::warn!("shared cache: {error}; building locally");
                Ok(None)
            }
        }
    }

    async fn latest(&self, name: &str) -> Result<Option<Record>, StoreError> {
        self.local.latest(name).await
    }

    async fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        self.local.put_record(record).await?;
        if let Some(remote) = &self.remote
            && remote.writes()
            && let Err(error) = remote.publish(record, &self.local).await
        {
            tracing::warn!("shared cache: cannot publish step {}: {error}", record.key);
        }
        Ok(())
    }

    async fn lock_step(&self, key: &StepKey, deps: &[Digest]) -> Result<StepLock, StoreError> {
        self.local.lock_step(key, deps).await
    }

    async fn try_lock_step(
        &self,
        key: &StepKey,
        deps: &[Digest],
    ) -> Result<Option<StepLock>, StoreError> {
        self.local.try_lock_step(key, deps).await
    }

    async fn writing(&self) -> Result<StoreLock, StoreError> {
        self.local.writing().await
    }
}
