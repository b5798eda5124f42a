//! The lockfile: a canonical JSON record of one release — its names, every resolved input,
//! every step with its key and outputs, the tag set, module sums, the k3s commit and the
//! artifacts. Same inputs on any machine give byte-identical lockfiles: keys are sorted, and
//! nothing in it is a time of the run, a host path or a host name.

use std::collections::BTreeMap;

use crate::gomod::ProxyModule;
use crate::hash::{Digest, StepKey};
use crate::release::{Identity, ReleaseNames};

/// Version of the lockfile format.
pub const LOCKFILE_VERSION: u32 = 1;

/// One release, locked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lockfile {
    /// Format version.
    pub version: u32,
    /// Every derived name.
    pub release: ReleaseNames,
    /// Resolved inputs.
    pub inputs: Inputs,
    /// Steps by name.
    pub steps: BTreeMap<String, LockedStep>,
    /// The fork's new tags → commit ids.
    pub tags: BTreeMap<String, String>,
    /// Modules served to the k3s build, with their sums.
    pub modules: Vec<ProxyModule>,
    /// The k3s branch and commit.
    pub k3s: K3sResult,
    /// Artifacts by path under dist/artifacts.
    pub artifacts: BTreeMap<String, Artifact>,
}

/// Everything the release read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inputs {
    /// Commit of the old upstream tag.
    pub old_k8s_commit: String,
    /// Commit of the new upstream tag.
    pub new_k8s_commit: String,
    /// Commit of the old fork tag.
    pub old_fork_commit: String,
    /// The old release's k3s patches, oldest first.
    pub patches: Vec<String>,
    /// `.go-version` at the old and new upstream tags.
    pub go_versions: BTreeMap<String, String>,
    /// The k3s release branch head.
    pub k3s_release_branch_commit: String,
    /// The toolchain image's identity (recipe key) and its base's rootfs digest.
    pub toolchain: Toolchain,
    /// Commit identity.
    pub identity: Identity,
    /// `SOURCE_DATE_EPOCH` and the commit dates.
    pub source_date_epoch: i64,
    /// Extra modules: path → tag → commit.
    pub extra_modules: BTreeMap<String, BTreeMap<String, String>>,
}

/// The toolchain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Toolchain {
    /// Recipe key of the toolchain image.
    pub image: Digest,
    /// The Go inside.
    pub go: String,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockedStep {
    /// Its key.
    pub key: StepKey,
    /// Output path → digest.
    pub outputs: BTreeMap<String, Digest>,
}

/// The k3s result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct K3sResult {
    /// The branch (named after the new fork tag).
    pub branch: String,
    /// Its commit.
    pub commit: String,
}

/// One artifact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    /// SHA-256 of its bytes.
    pub sha256: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// Why a lockfile cannot be used.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LockfileError {
    /// The file cannot be read.
    #[error("cannot read lockfile {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a lockfile.
    #[error("invalid lockfile {path}: {reason}")]
    #[diagnostic(
        code(kiln::lockfile::syntax),
        help("lockfiles are written by `kiln release`; restore it from git or release again")
    )]
    Syntax {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        reason: String,
        /// The text.
        #[source_code]
        src: miette::NamedSource<String>,
        /// Where.
        #[label("here")]
        at: Option<miette::SourceSpan>,
    },
    /// The lockfile names something kiln refuses to act on.
    #[error("lockfile {path}: {reason}")]
    #[diagnostic(
        code(kiln::lockfile::unsafe_name),
        help("a lockfile written by kiln never holds this; do not act on it")
    )]
    Refused {
        /// The file.
        path: String,
        /// What.
        reason: String,
    },
}

impl Lockfile {
    /// Reads and checks a lockfile: its version, and every tag and branch name against
    /// kiln's allowlist, before anything acts on it.
    pub fn read(path: &std::path::Path) -> Result<Self, LockfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let lock: Self = serde_json::from_str(&text).map_err(|e| {
            let offset = text
                .lines()
                .take(e.line().saturating_sub(1))
                .map(|l| l.len() + 1)
                .sum::<usize>()
                + e.column().saturating_sub(1);
            LockfileError::Syntax {
                path: origin.clone(),
                reason: e.to_string(),
                src: miette::NamedSource::new(origin.clone(), text.clone()),
                at: Some(offset.min(text.len().saturating_sub(1)).into()),
            }
        })?;
        let refused = |reason: String| LockfileError::Refused {
            path: origin.clone(),
            reason,
        };
        if lock.version != LOCKFILE_VERSION {
            return Err(refused(format!(
                "version {} is not {LOCKFILE_VERSION}",
                lock.version
            )));
        }
        for name in lock.tags.keys().chain(std::iter::once(&lock.k3s.branch)) {
            crate::git::validate_rev(name)
                .map_err(|_| refused(format!("`{name}` is not an acceptable ref name")))?;
        }
        for commit in lock.tags.values().chain(std::iter::once(&lock.k3s.commit)) {
            if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refused(format!("`{commit}` is not a commit id")));
            }
        }
        Ok(lock)
    }

    /// The `git push` lines of the runbook's push.sh: the fork's tags (sorted, as `LC_ALL=C`
    /// sorts) to `fork_remote`, then the k3s branch to `k3s_remote`.
    #[must_use]
    pub fn push_lines(&self, fork_remote: &str, k3s_remote: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .tags
            .keys()
            .map(|t| format!("git push {fork_remote} {t}"))
            .collect();
        lines.sort();
        lines.push(format!("git push {k3s_remote} {}", self.k3s.branch));
        lines
    }

    /// The canonical text: pretty JSON with sorted keys and a final newline.
    ///
    /// # Panics
    /// Never: every field serializes.
    #[must_use]
    pub fn to_canonical(&self) -> String {
        // Through `Value`: serde_json's map is ordered by key, so every object is sorted.
        let value = serde_json::to_value(self).expect("a lockfile always serializes");
        let mut text =
            serde_json::to_string_pretty(&value).expect("a JSON value always serializes");
        text.push('\n');
        text
    }
}
