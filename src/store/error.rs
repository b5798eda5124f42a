use std::path::PathBuf;

use crate::hash::Digest;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum StoreError {
    /// A file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What kiln was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The filesystem holding the store is full.
    #[error("no space left on the device while writing {path} ({filesystem})")]
    #[diagnostic(
        code(kiln::store::no_space),
        help(
            "free space, run `kiln store gc`, or point --store / KILN_STORE at a larger disk; nothing partial was kept"
        )
    )]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// Which filesystem is full: its type, mount point, size and free space.
        filesystem: String,
    },

    /// The filesystem cannot lock files, so concurrent runs could corrupt each other.
    #[error("cannot lock {path}: the filesystem does not support file locks")]
    #[diagnostic(
        code(kiln::store::no_locks),
        help(
            "put the store on a local filesystem that supports flock (--store DIR or KILN_STORE)"
        )
    )]
    LockUnavailable {
        /// The lock file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// Stored bytes do not match their digest.
    #[error("blob {digest} is corrupt: its bytes hash to {actual} ({path})")]
    #[diagnostic(
        code(kiln::store::corrupt),
        help("run `kiln store verify --repair`; the step that produced it will run again")
    )]
    Corrupt {
        /// The digest the blob is stored under.
        digest: Digest,
        /// What its bytes hash to.
        actual: Digest,
        /// The blob file.
        path: PathBuf,
    },

    /// A record names a blob the store does not have.
    #[error("record {key} names output `{output}` ({digest}), which is not in the store")]
    #[diagnostic(code(kiln::store::missing_output), help("this is a bug in kiln"))]
    MissingOutput {
        /// The record.
        key: String,
        /// The output.
        output: String,
        /// Its digest.
        digest: Digest,
    },

    /// A record could not be encoded.
    #[error("cannot encode the record of step `{step}`; this is a bug in kiln")]
    Encode {
        /// The step.
        step: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },

    /// A tree (directory archive) is unsafe or malformed.
    #[error("tree {what} is not acceptable: {reason}")]
    #[diagnostic(code(kiln::store::bad_tree))]
    BadTree {
        /// Which tree (a path or digest).
        what: String,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// Maps an I/O error on `path`, recognising a full disk.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            let filesystem = describe_filesystem(&path);
            Self::NoSpace { path, filesystem }
        } else {
            Self::Io {
                action,
                path,
                source,
            }
        }
    }
}

impl From<crate::durable::WriteError> for StoreError {
    fn from(error: crate::durable::WriteError) -> Self {
        Self::io(error.action, error.path, error.source)
    }
}

/// The filesystem holding `path`, for a full-disk message: "tmpfs at /mnt/store, 1.00 MiB total, 0 B
/// free". Whatever cannot be found out is left out.
fn describe_filesystem(path: &std::path::Path) -> String {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    let at = std::fs::canonicalize(at).unwrap_or_else(|_| at.to_owned());
    // /proc/self/mountinfo: "id parent dev root MOUNTPOINT options [optional…] - TYPE source …";
    // the longest mount point above `at` is its filesystem.
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .filter_map(|line| {
                    let (left, right) = line.split_once(" - ")?;
                    let point = left.split(' ').nth(4)?.replace("\\040", " ");
                    let kind = right.split(' ').next()?.to_owned();
                    at.starts_with(&point).then_some((point, kind))
                })
                .max_by_key(|(point, _)| point.len())
        });
    let mut parts = Vec::new();
    if let Some((point, kind)) = mount {
        parts.push(format!("{kind} at {point}"));
    }
    if let Ok(stat) = rustix::fs::statvfs(&at) {
        let size = stat.f_blocks.saturating_mul(stat.f_frsize);
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        parts.push(format!(
            "{} total, {} free",
            indicatif::HumanBytes(size),
            indicatif::HumanBytes(free)
        ));
    }
    if parts.is_empty() {
        "filesystem unknown".to_owned()
    } else {
        parts.join(", ")
    }
}
