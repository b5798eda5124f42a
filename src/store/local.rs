//! [`LocalStore`]: the store on a local filesystem. Layout (under `<dir>/store-v1/`):
//!
//! ```text
//! blobs/sha256/ab/<64 hex>   content-addressed blobs, mode 0444, named by their SHA-256
//! records/<64 hex>.json      one record per step key, written after its blobs are durable
//! names/<step name>          the key of the latest record of that step name (why-rebuild)
//! tmp/                       in-flight writes; same filesystem, so publishing is a rename
//! work/<key hex>.<id>/       a running step's inputs and outputs (`in/`, `out/`)
//! locks/<64 hex>.lock        flock per step key; lists the digests the running step needs
//! locks/store.lock           shared by writers from first blob to record, exclusive by gc
//! corrupt/                   blobs and records moved aside by `kiln store verify --repair`
//! verified/<64 hex>.json     a passed `kiln verify` of the lockfile with that SHA-256
//! git/<hex>.git              bare mirrors of the repositories releases read (host-side git)
//! ```
//!
//! A write goes to `tmp/`, is fsynced, renamed into place, and the directory fsynced; a
//! record goes last and only names durable blobs. A crash at any point leaves either no
//! entry or a complete one (plus, at worst, a stray temp file or an unreferenced blob, which
//! `gc` removes). Digests are verified whenever bytes leave the store.

use std::fs::{self, File};
use std::io::{BufReader, Read, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::hash::{Digest, Sha256Reader, Sha256Writer, StepKey};

use super::lock::{
    StepLock, StoreLock, lock_store_blocking, try_lock_step, try_lock_store_exclusive,
};
use super::tree::unpack_tree_sized;
use super::{Record, StoreError};

/// Name of the versioned layout directory.
pub(crate) const LAYOUT: &str = "store-v1";

/// Copy buffer size: large enough that hashing, not syscalls, bounds throughput.
const BUFFER: usize = 1 << 20;

/// How often a waiter retries a step lock held by another process.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// A store on the local filesystem. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LocalStore {
    root: Arc<PathBuf>,
}

impl LocalStore {
    /// Opens (creating if needed) the store in `dir` (the layout lives in `dir/store-v1`).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let root = dir.join(LAYOUT);
        for sub in [
            "blobs/sha256",
            "records",
            "names",
            "tmp",
            "work",
            "locks",
            "corrupt",
            "verified",
        ] {
            // Synced into their parents: records and blobs renamed into a store made moments
            // before a power loss must not vanish with its directories.
            crate::durable::create_dir_all(&root.join(sub)).map_err(StoreError::from)?;
        }
        let store = Self {
            root: Arc::new(root),
        };
        // Best effort: a read-only store, or one without locks, still opens (what needs a lock
        // fails later, with its own error).
        if let Err(error) = store.reap_tmp() {
            tracing::warn!(%error, "cannot clean the store's tmp/");
        }
        Ok(store)
    }

    /// Removes what killed processes left in `tmp/` (temporary blobs and records, scratch
    /// space nobody holds), when no other kiln process uses the store: every kiln start that
    /// opens the store leaves a clean `tmp/`. Returns how many entries went.
    fn reap_tmp(&self) -> Result<usize, StoreError> {
        let Some(_alone) = try_lock_store_exclusive(&self.store_lock_path())? else {
            return Ok(0);
        };
        let tmp = self.tmp_dir();
        let entries = fs::read_dir(&tmp).map_err(|e| StoreError::io("list", &tmp, e))?;
        let mut removed = 0;
        for entry in entries {
            let path = entry.map_err(|e| StoreError::io("list", &tmp, e))?.path();
            if super::scratch::in_use(&path) {
                continue;
            }
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed += 1,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot remove a leftover in the store's tmp/");
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed what killed kiln processes left in the store's tmp/"
            );
        }
        Ok(removed)
    }

    /// Where the store lives unless `--store` says otherwise: `$KILN_STORE`, else
    /// `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
    #[must_use]
    pub(crate) fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("KILN_STORE").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("kiln");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        home.join(".cache/kiln")
    }

    /// The `store-v1` directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives (whether or not it exists).
    #[must_use]
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// Where the record of `key` lives.
    #[must_use]
    pub(crate) fn record_path(&self, key: &StepKey) -> PathBuf {
        self.root
            .join("records")
            .join(format!("{}.json", key.hex()))
    }

    pub(crate) fn lock_path(&self, key: &StepKey) -> PathBuf {
        self.root.join("locks").join(format!("{}.lock", key.hex()))
    }

    pub(crate) fn store_lock_path(&self) -> PathBuf {
        self.root.join("locks/store.lock")
    }

    /// Where host-side git keeps bare mirrors of the repositories releases read, one per
    /// location (`git/<digest of the location>.git`).
    #[must_use]
    pub(crate) fn git_dir(&self) -> PathBuf {
        self.root.join("git")
    }

    /// Where running steps get their work directories.
    #[must_use]
    pub(crate) fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn name_path(&self, name: &str) -> PathBuf {
        self.root.join("names").join(name)
    }

    /// Takes the store-wide lock (shared for writers, exclusive for gc). Blocks.
    pub(crate) fn lock_store_sync(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        lock_store_blocking(&self.store_lock_path(), exclusive)
    }

    /// Waits for the lock of `key` and records `deps` in it.
    ///
    /// Each attempt holds the shared store lock, so `gc` (exclusive) sees either no holder or
    /// a holder whose dependencies are already written; waiting happens outside it, so a long
    /// step elsewhere never blocks `gc`.
    pub(crate) fn lock_step_sync(
        &self,
        key: &StepKey,
        deps: &[Digest],
    ) -> Result<StepLock, StoreError> {
        loop {
            if let Some(lock) = self.try_lock_step_sync(key, deps)? {
                return Ok(lock);
            }
            std::thread::sleep(LOCK_POLL);
        }
    }

    /// The step lock of `key` if no other run holds it.
    pub(crate) fn try_lock_step_sync(
        &self,
        key: &StepKey,
        deps: &[Digest],
    ) -> Result<Option<StepLock>, StoreError> {
        let _writers = self.lock_store_sync(false)?;
        try_lock_step(&self.lock_path(key), deps)
    }

    /// Whether the blob is stored.
    #[must_use]
    pub(crate) fn contains_sync(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores the bytes `reader` yields; returns their digest and size. Storing bytes that are
    /// already stored is a no-op.
    ///
    /// # Panics
    /// If the writer thread panics (it only writes, so it does not).
    pub(crate) fn put_reader_sync(
        &self,
        mut reader: impl Read,
    ) -> Result<(Digest, u64), StoreError> {
        let _writers = self.lock_store_sync(false)?;
        let tmp_dir = self.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| StoreError::io("create a temporary blob in", &tmp_dir, e))?;
        let tmp_path = tmp.path().to_owned();
        let (digest, size) = hash_and_write(&mut reader, tmp.as_file(), &tmp_path, true)?;
        let final_path = self.blob_path(&digest);
        // Already stored: keep it (the temp file is removed on drop). A stored copy of another
        // size was damaged (truncated); replace it. Other damage is caught when it is read.
        if fs::metadata(&final_path).is_ok_and(|m| m.is_file() && m.len() == size) {
            return Ok((digest, size));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("sync", &tmp_path, e))?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o444))
            .map_err(|e| StoreError::io("set the mode of", &tmp_path, e))?;
        let parent = final_path.parent().expect("blob paths have a parent");
        // A new prefix directory is synced into its parent, or a power loss could drop the
        // directory with the blob in it.
        crate::durable::create_dir_all(parent).map_err(StoreError::from)?;
        tmp.persist(&final_path)
            .map_err(|e| StoreError::io("publish the blob", &final_path, e.error))?;
        crate::durable::sync_dir(parent).map_err(StoreError::from)?;
        Ok((digest, size))
    }

    /// Stores the file at `path`.
    pub fn put_file_sync(&self, path: &Path) -> Result<(Digest, u64), StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        self.put_reader_sync(file)
    }

    /// Copies the blob to the new file `dest`, verifying its digest on the way. `Ok(false)`:
    /// not stored. A blob whose bytes do not match is moved to `corrupt/` (so the step that
    /// produced it can run again) and reported.
    ///
    /// # Panics
    /// If the hashing thread panics (it only reads, so it does not).
    pub(crate) fn export_sync(&self, digest: &Digest, dest: &Path) -> Result<bool, StoreError> {
        let source = self.blob_path(digest);
        let file = match File::open(&source) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("open", &source, e)),
        };
        let out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|e| StoreError::io("create", dest, e))?;
        // Blobs are immutable, so the bytes can be copied in the kernel (`io::copy` uses
        // copy_file_range) while another thread hashes the same open file with positioned
        // reads; both see one inode, so the check covers what was copied.
        let copied = std::thread::scope(|scope| {
            let hash_thread = scope.spawn(|| hash_at(&file));
            let mut from = &file;
            let mut to = &out;
            let copy_result = std::io::copy(&mut from, &mut to);
            let hashed = hash_thread.join().expect("the hasher does not panic");
            match (copy_result, hashed) {
                (Ok(_), Ok(actual)) => Ok(actual),
                (Err(e), _) => Err(StoreError::io("copy the blob to", dest, e)),
                (_, Err(e)) => Err(StoreError::io("read", &source, e)),
            }
        });
        let actual = match copied {
            Ok(actual) => actual,
            Err(error) => {
                let _ = fs::remove_file(dest);
                return Err(error);
            }
        };
        if actual != *digest {
            let _ = fs::remove_file(dest);
            return Err(self.quarantine(digest, actual));
        }
        Ok(true)
    }

    /// Unpacks the tree blob into the existing empty directory `dest`, its digest verified
    /// *before* anything is written: a corrupt tree never reaches `dest` (an export directory,
    /// a step's inputs). `Ok(false)`: not stored.
    pub(crate) fn unpack_sync(
        &self,
        digest: &Digest,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<bool, StoreError> {
        let source = self.blob_path(digest);
        let file = match File::open(&source) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("open", &source, e)),
        };
        let actual = hash_at(&file).map_err(|e| StoreError::io("read", &source, e))?;
        if actual != *digest {
            return Err(self.quarantine(digest, actual));
        }
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("inspect", &source, e))?
            .len();
        // Read again from the same open file (a blob is never rewritten in place; the second
        // hash catches a disk that returns other bytes the second time).
        let mut reader = Sha256Reader::new(BufReader::with_capacity(BUFFER, file));
        let unpacked = unpack_tree_sized(&mut reader, len, dest, max_bytes, &digest.to_string());
        let again = reader
            .finish()
            .map_err(|e| StoreError::io("read", &source, e))
            .map(|(again, _)| again);
        match (unpacked, again) {
            (Ok(()), Ok(again)) if again == *digest => Ok(true),
            (result, again) => {
                clear_dir(dest);
                result?;
                let again = again?;
                Err(self.quarantine(digest, again))
            }
        }
    }

    /// Reads a whole (small) blob, verified. `Ok(None)`: not stored.
    pub fn read_sync(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let source = self.blob_path(digest);
        let bytes = match fs::read(&source) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &source, e)),
        };
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(self.quarantine(digest, actual));
        }
        Ok(Some(bytes))
    }

    /// Moves a corrupt blob aside and returns the error describing it.
    fn quarantine(&self, digest: &Digest, actual: Digest) -> StoreError {
        let path = self.blob_path(digest);
        let aside = self.root.join("corrupt").join(digest.hex());
        if let Err(error) = fs::rename(&path, &aside) {
            tracing::warn!(path = %path.display(), %error, "cannot move a corrupt blob aside");
        }
        StoreError::Corrupt {
            digest: *digest,
            actual,
            path,
        }
    }

    /// The record of `key`. `Ok(None)`: no record — or one that is unreadable, damaged or
    /// names a blob the store lacks, which is reported as a warning naming the file and
    /// treated as a miss.
    pub fn record_sync(&self, key: &StepKey) -> Result<Option<Record>, StoreError> {
        let Some(record) = self.record_file_sync(key)? else {
            return Ok(None);
        };
        // A record whose blob is gone (deleted by hand, lost in a crash, moved aside as
        // corrupt) is a miss: the step runs again and restores it.
        if let Some(output) = record
            .outputs
            .values()
            .find(|o| !self.contains_sync(&o.digest))
        {
            tracing::warn!(
                path = %self.record_path(key).display(),
                missing = %output.digest,
                "ignoring a record whose output is not in the store"
            );
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// The record file of `key` as written, whether or not its blobs are still stored (for
    /// explaining a rebuild); unreadable and damaged ones are `None`, with a warning.
    fn record_file_sync(&self, key: &StepKey) -> Result<Option<Record>, StoreError> {
        let path = self.record_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        match Record::parse(&bytes) {
            Ok(record) if record.key == *key => Ok(Some(record)),
            Ok(record) => {
                tracing::warn!(path = %path.display(), found = %record.key, "record file holds another key; ignoring it");
                Ok(None)
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring a damaged record");
                Ok(None)
            }
        }
    }

    /// The latest record of a step named `name`, if any (for why-rebuild).
    pub(crate) fn latest_sync(&self, name: &str) -> Result<Option<Record>, StoreError> {
        let path = self.name_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        match text.trim().parse::<StepKey>() {
            Ok(key) => self.record_file_sync(&key),
            Err(_) => Ok(None),
        }
    }

    /// Writes `record`, after checking that every output it names is stored.
    pub fn put_record_sync(&self, record: &Record) -> Result<(), StoreError> {
        for (name, output) in &record.outputs {
            if !self.contains_sync(&output.digest) {
                return Err(StoreError::MissingOutput {
                    key: record.key.to_string(),
                    output: name.clone(),
                    digest: output.digest,
                });
            }
        }
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Encode {
            step: record.name.clone(),
            source,
        })?;
        let _writers = self.lock_store_sync(false)?;
        write_durably(&self.tmp_dir(), &self.record_path(&record.key), &bytes)?;
        if is_plain_name(&record.name) {
            write_durably(
                &self.tmp_dir(),
                &self.name_path(&record.name),
                record.key.to_string().as_bytes(),
            )?;
        }
        Ok(())
    }
}

impl LocalStore {
    fn verified_path(&self, lockfile: &Digest) -> PathBuf {
        self.root
            .join("verified")
            .join(format!("{}.json", lockfile.hex()))
    }

    /// Notes that the lockfile whose bytes hash to `lockfile` was rebuilt and matched;
    /// `note` is a small JSON document saying how.
    pub(crate) fn put_verified_sync(
        &self,
        lockfile: &Digest,
        note: &[u8],
    ) -> Result<(), StoreError> {
        // A writer, like a record's: gc never removes the temp file mid-write.
        let _writers = self.lock_store_sync(false)?;
        write_durably(&self.tmp_dir(), &self.verified_path(lockfile), note)
    }

    /// The note of a passed verification of `lockfile`, if there is one.
    pub(crate) fn verified_sync(&self, lockfile: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.verified_path(lockfile);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }
}

/// Removes everything in `dir` (best effort): what a failed unpack left.
fn clear_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

/// The SHA-256 of a whole file, read with positioned reads (the file offset is untouched).
fn hash_at(file: &File) -> std::io::Result<Digest> {
    use std::os::unix::fs::FileExt as _;
    let mut hasher = Sha256Writer::new(std::io::sink());
    let mut buffer = vec![0u8; BUFFER];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buffer, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher
            .write_all(&buffer[..n])
            .expect("writing to a sink cannot fail");
        offset += n as u64;
    }
    Ok(hasher.finish().0)
}

/// Chunk size of the put pipeline.
const CHUNK: usize = 4 << 20;

/// How much the put pipeline writes between intermediate syncs.
const SYNC_EVERY: usize = 8 << 20;

/// Copies `reader` into `file` while hashing the same bytes: one thread reads and hashes, a
/// second writes, so hashing and writing overlap. Both see exactly the same chunks, so the
/// digest always names what was written, even if the source changes meanwhile.
/// With `durable`, the written data is flushed to disk as it goes (blobs entering the store);
/// exports leave that to the caller.
fn hash_and_write(
    reader: &mut impl Read,
    file: &File,
    path: &Path,
    durable: bool,
) -> Result<(Digest, u64), StoreError> {
    let (send, receive) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(4);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<()> {
            let mut out = file;
            let mut unsynced = 0;
            for chunk in receive {
                out.write_all(&chunk)?;
                unsynced += chunk.len();
                // Flush as we go, so the disk works while the other thread hashes and the
                // final fsync has little left to do.
                if durable && unsynced >= SYNC_EVERY {
                    out.sync_data()?;
                    unsynced = 0;
                }
            }
            Ok(())
        });
        let mut hasher = Sha256Writer::new(std::io::sink());
        let read_result = (|| -> Result<(), StoreError> {
            loop {
                let mut chunk = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    match reader.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(StoreError::io("read the data for", path, e)),
                    }
                }
                if filled == 0 {
                    return Ok(());
                }
                chunk.truncate(filled);
                hasher
                    .write_all(&chunk)
                    .expect("writing to a sink cannot fail");
                if send.send(Arc::new(chunk)).is_err() {
                    return Ok(()); // the writer stopped; its error is reported below
                }
                if filled < CHUNK {
                    return Ok(());
                }
            }
        })();
        drop(send);
        let written = writer.join().expect("the blob writer does not panic");
        read_result?;
        written.map_err(|e| StoreError::io("write", path, e))?;
        let (digest, size, _) = hasher.finish();
        Ok((digest, size))
    })
}

/// Step names become file names under `names/`; only plain ones are indexed.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Writes `bytes` to `path` atomically and durably through the store's `tmp/`.
pub(crate) fn write_durably(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    crate::durable::write(
        path,
        bytes,
        crate::durable::Placement::Via {
            dir: tmp_dir,
            mode: 0o644,
        },
    )
    .map_err(StoreError::from)
}
