//! `kiln store verify`: re-hash every blob, re-check every record.

use std::fs;
use std::path::{Path, PathBuf};

use crate::hash::{Digest, Sha256Reader};

use super::{LocalStore, Record, StoreError};

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct VerifyReport {
    /// Blobs re-hashed.
    pub(crate) blobs: u64,
    /// Their total size.
    pub(crate) bytes: u64,
    /// Records checked.
    pub(crate) records: u64,
    /// Blobs whose bytes do not hash to their name.
    pub(crate) corrupt_blobs: Vec<PathBuf>,
    /// Records that cannot be read or do not check out, with why.
    pub(crate) bad_records: Vec<(PathBuf, String)>,
    /// Records naming blobs the store lacks: (record, missing digest).
    pub(crate) missing_blobs: Vec<(PathBuf, Digest)>,
    /// Leftover temporary files (harmless; `gc` removes them).
    pub(crate) temp_files: u64,
    /// True when problems were moved to `corrupt/`.
    pub(crate) repaired: bool,
}

impl VerifyReport {
    /// True when nothing is wrong.
    #[must_use]
    pub(crate) fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.bad_records.is_empty()
            && self.missing_blobs.is_empty()
    }
}

/// Checks the whole store; with `repair`, moves corrupt blobs and bad records to `corrupt/`
/// (the steps they belonged to will simply run again).
///
/// # Panics
/// If a store entry has no file name (entries come from listing directories, so they do).
pub(crate) fn verify(store: &LocalStore, repair: bool) -> Result<VerifyReport, StoreError> {
    let _exclusive = store.lock_store_sync(true)?;
    let mut report = VerifyReport::default();
    let blob_root = store.root().join("blobs/sha256");
    for prefix in list(&blob_root)? {
        for path in list(&prefix)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let expected: Option<Digest> = format!("sha256:{name}").parse().ok();
            let file = fs::File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
            let (actual, size) =
                Sha256Reader::new(std::io::BufReader::with_capacity(1 << 20, file))
                    .finish()
                    .map_err(|e| StoreError::io("read", &path, e))?;
            report.blobs += 1;
            report.bytes += size;
            if expected != Some(actual) {
                report.corrupt_blobs.push(path);
            }
        }
    }
    for path in list(&store.root().join("records"))? {
        report.records += 1;
        let bytes = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
        let record = match Record::parse(&bytes) {
            Ok(record) => record,
            Err(reason) => {
                report.bad_records.push((path, reason));
                continue;
            }
        };
        if path.file_name().and_then(|n| n.to_str()) != Some(&format!("{}.json", record.key.hex()))
        {
            report
                .bad_records
                .push((path, format!("holds the record of {}", record.key)));
            continue;
        }
        for output in record.outputs.values() {
            let blob = store.blob_path(&output.digest);
            if !blob.is_file() || report.corrupt_blobs.contains(&blob) {
                report.missing_blobs.push((path.clone(), output.digest));
            }
        }
    }
    report.temp_files = list(&store.root().join("tmp"))?.len() as u64;
    if repair && !report.is_clean() {
        let aside = store.root().join("corrupt");
        let bad_records = report.bad_records.iter().map(|(p, _)| p);
        let orphaned = report.missing_blobs.iter().map(|(p, _)| p);
        for path in report
            .corrupt_blobs
            .iter()
            .chain(bad_records)
            .chain(orphaned)
        {
            let name = path.file_name().expect("store entries have names");
            match fs::rename(path, aside.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {} // moved already
                Err(e) => return Err(StoreError::io("move aside", path, e)),
            }
        }
        report.repaired = true;
    }
    Ok(report)
}

/// The entries of `dir`, sorted; a missing directory is empty.
pub(super) fn list(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| StoreError::io("list", dir, e))?;
    paths.sort();
    Ok(paths)
}
