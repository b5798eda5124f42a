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

impl Lockfile {
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
