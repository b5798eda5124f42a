//! `kiln store gc`: remove what no lockfile, recent run or running step needs.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::hash::{Digest, StepKey};

use super::lock::held_step_lock;
use super::verify::list;
use super::{LocalStore, Record, StoreError};

/// What to keep.
#[derive(Clone, Debug, Default)]
pub(crate) struct GcOptions {
    /// Digests named by lockfiles: step keys (their records and blobs are kept) and blobs.
    pub(crate) roots: HashSet<Digest>,
    /// Records and blobs written more recently than this are kept.
    pub(crate) keep_recent: Duration,
}

/// What `gc` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct GcReport {
    /// Records kept.
    pub(crate) records_kept: u64,
    /// Records removed.
    pub(crate) records_removed: u64,
    /// Blobs kept, and their size.
    pub(crate) blobs_kept: u64,
    /// Bytes kept.
    pub(crate) bytes_kept: u64,
    /// Blobs removed.
    pub(crate) blobs_removed: u64,
    /// Bytes freed.
    pub(crate) bytes_freed: u64,
    /// Steps running right now (their locks are held); everything they need was kept.
    pub(crate) running_steps: u64,
    /// Temporary files and unused lock files removed.
    pub(crate) leftovers_removed: u64,
    /// Scratch files and directories of running kiln processes, left alone.
    pub(crate) scratch_in_use: u64,
}

/// Collects garbage. Holds the store lock exclusively: no blob or record is written while it
/// runs, and a step that holds its lock keeps its inputs, outputs and record.
pub(crate) fn gc(store: &LocalStore, options: &GcOptions) -> Result<GcReport, StoreError> {
    let _exclusive = store.lock_store_sync(true)?;
    let now = SystemTime::now();
    let is_recent = |path: &PathBuf| {
        fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < options.keep_recent)
    };
    let mut report = GcReport::default();
    let mut live: HashSet<Digest> = options.roots.clone();

    // Running steps: held locks list what they need.
    let mut running: HashSet<StepKey> = HashSet::new();
    for path in list(&store.root().join("locks"))? {
        let Some(key) = key_of(&path, ".lock") else {
            continue;
        };
        match held_step_lock(&path)? {
            Some(deps) => {
                report.running_steps += 1;
                running.insert(key);
                live.extend(deps);
            }
            None => {
                fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                report.leftovers_removed += 1;
            }
        }
    }

    // Records: keep the rooted, the recent and the running; their blobs stay live.
    let mut removed_records = Vec::new();
    for path in list(&store.root().join("records"))? {
        let Some(key) = key_of(&path, ".json") else {
            continue;
        };
        let keep = live.contains(key.digest()) || running.contains(&key) || is_recent(&path);
        if keep {
            report.records_kept += 1;
            let bytes = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
            if let Ok(record) = Record::parse(&bytes) {
                live.extend(record.blobs());
            }
        } else {
            fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
            report.records_removed += 1;
            removed_records.push(key);
        }
    }
    for path in list(&store.root().join("names"))? {
        let points_to = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<StepKey>().ok());
        if points_to.is_none_or(|key| !store.record_path(&key).is_file()) {
            fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        }
    }

    for prefix in list(&store.root().join("blobs/sha256"))? {
        for path in list(&prefix)? {
            let size = fs::symlink_metadata(&path).map_or(0, |m| m.len());
            let digest = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
            if digest.is_some_and(|d| live.contains(&d)) || is_recent(&path) {
                report.blobs_kept += 1;
                report.bytes_kept += size;
            } else {
                fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
    }

    // Work directories of steps that are not running were left by killed runs.
    for path in list(&store.work_dir())? {
        let key = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .and_then(|hex| format!("sha256:{hex}").parse::<StepKey>().ok());
        if key.is_some_and(|k| running.contains(&k)) {
            continue;
        }
        fs::remove_dir_all(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        report.leftovers_removed += 1;
    }

    // With the exclusive lock held, no blob or record write is in flight; scratch space a live
    // process holds is locked (see `scratch.rs`): everything else is a leftover of a killed
    // process.
    for path in list(&store.tmp_dir())? {
        if super::scratch::in_use(&path) {
            report.scratch_in_use += 1;
            continue;
        }
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| StoreError::io("remove", &path, e))?;
        report.leftovers_removed += 1;
    }
    Ok(report)
}

fn key_of(path: &std::path::Path, suffix: &str) -> Option<StepKey> {
    let name = path.file_name()?.to_str()?.strip_suffix(suffix)?;
    format!("sha256:{name}").parse().ok()
}
