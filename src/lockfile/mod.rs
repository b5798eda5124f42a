//! The lockfile: a canonical JSON record of one release — its names, every resolved input,
//! every step with its key and outputs, the tag set, module sums, the k3s commit and the
//! artifacts. Same inputs on any machine give byte-identical lockfiles: keys are sorted, and
//! nothing in it is a time of the run, a host path or a host name.

use std::collections::BTreeMap;

mod check;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::sample;

use crate::gomod::ProxyModule;
use crate::hash::{Digest, StepKey};
use crate::names::{Identity, ReleaseNames};

/// Version of the lockfile format.
pub(crate) const LOCKFILE_VERSION: u32 = 2;

/// One release, locked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    /// Format version.
    pub(crate) version: u32,
    /// Every derived name.
    pub(crate) release: ReleaseNames,
    /// Resolved inputs.
    pub(crate) inputs: Inputs,
    /// Steps by name.
    pub(crate) steps: BTreeMap<String, LockedStep>,
    /// The fork's new tags → commit ids.
    pub(crate) tags: BTreeMap<String, String>,
    /// The tag objects of those that tag.sh made annotated or signed → their ids (a
    /// lightweight tag has none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) tag_objects: BTreeMap<String, String>,
    /// Modules served to the k3s build, with their sums.
    pub(crate) modules: Vec<ProxyModule>,
    /// Third-party modules the release fetched (its `modules-fetch` step), with their go.sum
    /// sums (`h1` empty for a module whose go.mod alone was needed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) third_party: Vec<ProxyModule>,
    /// Every file the `modules-fetch` step fetched (its GOPROXY tree: `.info`, `.mod`, `.zip`
    /// and `list` of each module version) with its SHA-256: what a later fetch that differs
    /// is compared against, file by file, to name the module version that changed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) fetched: BTreeMap<String, Digest>,
    /// Every URL k3s's `scripts/download` fetched (its `k3s-download` step) with the SHA-256
    /// of what it got: what the offline build was served.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) downloads: BTreeMap<String, Digest>,
    /// Every repository k3s's scripts cloned (`URL#ref`, the ref as given to `git clone
    /// --branch`, `HEAD` without one) → the commit the build was served (the bundle's digest
    /// is in the `k3s-download` step's `urls` output).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) clones: BTreeMap<String, String>,
    /// The k3s branch and commit.
    pub(crate) k3s: K3sResult,
    /// Artifacts by path under dist/artifacts.
    pub(crate) artifacts: BTreeMap<String, Artifact>,
}

/// Everything the release read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inputs {
    /// Commit of the old upstream tag.
    pub(crate) old_k8s_commit: String,
    /// Commit of the new upstream tag.
    pub(crate) new_k8s_commit: String,
    /// Commit of the old fork tag.
    pub(crate) old_fork_commit: String,
    /// The old release's k3s patches, oldest first.
    pub(crate) patches: Vec<String>,
    /// `.go-version` at the old and new upstream tags.
    pub(crate) go_versions: BTreeMap<String, String>,
    /// The k3s release branch head.
    pub(crate) k3s_release_branch_commit: String,
    /// The k3s branch it is the head of (release-X.Y, or the default branch for the newest
    /// minor); empty in lockfiles written before kiln recorded it (then release-X.Y).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) k3s_branch: String,
    /// The toolchain image's identity (recipe key) and its base's rootfs digest.
    pub(crate) toolchain: Toolchain,
    /// Commit identity.
    pub(crate) identity: Identity,
    /// `SOURCE_DATE_EPOCH` and the commit dates.
    pub(crate) source_date_epoch: i64,
    /// Extra modules: path → tag → commit.
    pub(crate) extra_modules: BTreeMap<String, BTreeMap<String, String>>,
}

/// The toolchain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Toolchain {
    /// Recipe key of the toolchain image.
    pub(crate) image: Digest,
    /// The Go inside (`.go-version` of the new upstream tag, exactly).
    pub(crate) go: String,
    /// SHA-256 of the Go distribution archive the image was built from.
    pub(crate) archive: Digest,
    /// What `go version` printed inside the image (`go version go1.22.10 linux/amd64`).
    pub(crate) go_version: String,
}

/// One step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockedStep {
    /// Its key.
    pub(crate) key: StepKey,
    /// Output path → digest.
    pub(crate) outputs: BTreeMap<String, Digest>,
}

/// The k3s result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct K3sResult {
    /// The branch (named after the new fork tag).
    pub(crate) branch: String,
    /// Its commit.
    pub(crate) commit: String,
}

/// One artifact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Artifact {
    /// SHA-256 of its bytes.
    pub(crate) sha256: Digest,
    /// Size in bytes.
    pub(crate) size: u64,
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
    /// The lockfile is of another format version.
    #[error(
        "lockfile {path} has format version {found}; this kiln reads version {LOCKFILE_VERSION}"
    )]
    #[diagnostic(
        code(kiln::lockfile::version),
        help("use the kiln release that wrote it, or release again with this kiln")
    )]
    Version {
        /// The file.
        path: String,
        /// The version it holds.
        found: String,
    },
    /// The file is too large, or not text: no lockfile kiln wrote.
    #[error("{path} is not a lockfile: {reason}")]
    #[diagnostic(
        code(kiln::lockfile::invalid),
        help("lockfiles are written by `kiln release`; check the path")
    )]
    Invalid {
        /// The file.
        path: String,
        /// What.
        reason: String,
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

/// Largest lockfile kiln reads.
const MAX_BYTES: u64 = 8 << 20;

impl Lockfile {
    /// Reads and checks a lockfile ([`Lockfile::parse`]).
    pub(crate) fn read(path: &std::path::Path) -> Result<Self, LockfileError> {
        Self::read_with_digest(path).map(|(lock, _)| lock)
    }

    /// [`Lockfile::read`], and the SHA-256 of the bytes it was read from.
    pub(crate) fn read_with_digest(
        path: &std::path::Path,
    ) -> Result<(Self, crate::hash::Digest), LockfileError> {
        let text = Self::read_text(path)?;
        let lock = Self::parse(&text, &path.display().to_string())?;
        Ok((lock, crate::hash::Digest::of(text.as_bytes())))
    }

    /// The text of the lockfile at `path`, read bounded: a huge file (or /dev/zero) is refused
    /// after [`MAX_BYTES`], not read to the end; it must be UTF-8.
    pub(crate) fn read_text(path: &std::path::Path) -> Result<String, LockfileError> {
        use std::io::Read as _;
        let read_error = |source| LockfileError::Read {
            path: path.to_owned(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_BYTES + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(LockfileError::Invalid {
                path: path.display().to_string(),
                reason: format!(
                    "it is larger than {} (a release's lockfile is some tens of KiB)",
                    indicatif::HumanBytes(MAX_BYTES)
                ),
            });
        }
        String::from_utf8(bytes).map_err(|_| LockfileError::Invalid {
            path: path.display().to_string(),
            reason: "it is not UTF-8 text".into(),
        })
    }

    /// Parses and checks lockfile text (`origin` names it in errors): its format version, then
    /// its shape (unknown fields refused; errors with line and column), then every value that
    /// could reach a command or a path — ref names against kiln's allowlist, commit ids,
    /// digests, `h1:` sums, relative paths without `..`. Nothing acts on a lockfile before
    /// this passes.
    pub fn parse(text: &str, origin: &str) -> Result<Self, LockfileError> {
        // The version first: a lockfile from another kiln gets a version error, not a
        // confusing complaint about a field this kiln does not know.
        #[derive(serde::Deserialize)]
        struct Versioned {
            version: serde_json::Value,
        }
        let syntax = |e: &serde_json::Error| {
            let offset = text
                .lines()
                .take(e.line().saturating_sub(1))
                .map(|l| l.len() + 1)
                .sum::<usize>()
                + e.column().saturating_sub(1);
            LockfileError::Syntax {
                path: origin.to_owned(),
                reason: e.to_string(),
                src: miette::NamedSource::new(origin, text.to_owned()),
                at: Some(offset.min(text.len().saturating_sub(1)).into()),
            }
        };
        let versioned: Versioned = serde_json::from_str(text).map_err(|e| syntax(&e))?;
        if versioned.version != LOCKFILE_VERSION {
            return Err(LockfileError::Version {
                path: origin.to_owned(),
                found: versioned.version.to_string(),
            });
        }
        serde_json::from_str::<check::NoDuplicateKeys>(text).map_err(|e| syntax(&e))?;
        let lock: Self = serde_json::from_str(text).map_err(|e| syntax(&e))?;
        check::check(&lock).map_err(|reason| LockfileError::Refused {
            path: origin.to_owned(),
            reason,
        })?;
        Ok(lock)
    }

    /// Where `now` differs from this lockfile, one line per differing value, named by its
    /// path in the JSON (`steps.tag.outputs.push: sha256:… → sha256:…`), in key order; empty
    /// when they are equal.
    #[must_use]
    pub(crate) fn drift(&self, now: &Self) -> Vec<String> {
        let was = serde_json::to_value(self).expect("a lockfile always serializes");
        let now = serde_json::to_value(now).expect("a lockfile always serializes");
        let mut lines = Vec::new();
        drift_lines("", &was, &now, &mut lines);
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

/// Appends to `lines` where `now` differs from `was` below `path`.
fn drift_lines(
    path: &str,
    was: &serde_json::Value,
    now: &serde_json::Value,
    lines: &mut Vec<String>,
) {
    use serde_json::Value;
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (was, now) {
        (Value::Object(was), Value::Object(now)) => {
            let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
            for key in keys {
                match (was.get(key), now.get(key)) {
                    (Some(a), Some(b)) => drift_lines(&at(key), a, b, lines),
                    (Some(a), None) => lines.push(format!("{}: {} → (absent)", at(key), short(a))),
                    (None, Some(b)) => lines.push(format!("{}: (absent) → {}", at(key), short(b))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (a, b)) in a.iter().zip(b).enumerate() {
                drift_lines(&at(&i.to_string()), a, b, lines);
            }
        }
        (a, b) if a != b => lines.push(format!(
            "{}: {} → {}",
            if path.is_empty() { "(root)" } else { path },
            short(a),
            short(b)
        )),
        _ => {}
    }
}

/// A JSON value for one line of a drift report (long arrays and objects shortened).
fn short(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 100 {
        format!("{}…", text.chars().take(100).collect::<String>())
    } else {
        text
    }
}
