use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SandboxError;

/// Everything a sandbox needs to run one step. Nothing outside this value may reach the step:
/// no host environment, no host network, no host paths other than [`StepSpec::mounts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    /// Human name of the step (`rebase`, `tag`, …); used in labels, container names and errors.
    pub name: String,
    /// The engine's reference for the image (an image id `sha256:…` or a local tag). Identity
    /// for cache keys is tracked elsewhere; this is only how the engine finds the image.
    pub image: String,
    /// The command, passed as argv; never through a shell.
    pub argv: Vec<String>,
    /// The complete environment of the step, on top of the image's own `ENV`.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container.
    pub workdir: String,
    /// Host directories bound into the container.
    pub mounts: Vec<BindMount>,
    /// Named cache volumes, kept between steps and runs.
    pub caches: Vec<CacheMount>,
    /// The uid:gid the step runs as; `None` runs as the image's user.
    pub user: Option<UserId>,
    /// Network access of the step.
    pub network: Network,
    /// Memory limit in bytes (swap included); `None` means the engine's default.
    pub memory_limit: Option<u64>,
    /// Extra container labels (tests use these to find their containers).
    pub labels: BTreeMap<String, String>,
    /// On an engine that cannot bind host directories (a remote one), the writable mounts
    /// (by target) whose contents are copied back after the step; empty means all of them.
    pub collect: Vec<String>,
}

/// The fixed environment every step starts from: [`StepSpec::new`] puts these in, and callers
/// add their declared variables on top.
pub(crate) const BASE_ENV: [(&str, &str); 3] =
    [("HOME", "/home/kiln"), ("LC_ALL", "C"), ("TZ", "UTC")];

/// The hostname of every step container.
pub(crate) const STEP_HOSTNAME: &str = "kiln";

impl StepSpec {
    /// A step named `name` running `argv` in `image`, with [`BASE_ENV`], workdir `/`, no
    /// mounts, no network and the image's user.
    pub fn new(
        name: impl Into<String>,
        image: impl Into<String>,
        argv: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            argv: argv.into_iter().map(Into::into).collect(),
            env: BASE_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            workdir: "/".to_owned(),
            mounts: Vec::new(),
            caches: Vec::new(),
            user: None,
            network: Network::None,
            memory_limit: None,
            labels: BTreeMap::new(),
            collect: Vec::new(),
        }
    }

    /// Adds or replaces one environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Checks what the engine would otherwise reject late or misinterpret.
    pub(crate) fn validate(&self) -> Result<(), SandboxError> {
        let invalid = |reason: String| SandboxError::InvalidSpec {
            step: self.name.clone(),
            reason,
        };
        if self.argv.is_empty() {
            return Err(invalid("the command is empty".to_owned()));
        }
        if !is_label_safe(&self.name) {
            return Err(invalid(format!(
                "step name `{}` must be 1-64 characters of [A-Za-z0-9_.-]",
                self.name
            )));
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(invalid(format!(
                    "environment variable name `{key}` is not valid"
                )));
            }
        }
        if !self.workdir.starts_with('/') {
            return Err(invalid(format!(
                "workdir `{}` must be absolute",
                self.workdir
            )));
        }
        for mount in &self.mounts {
            if !mount.source.is_absolute() {
                return Err(invalid(format!(
                    "mount source {} must be an absolute path",
                    mount.source.display()
                )));
            }
            if !mount.target.starts_with('/') {
                return Err(invalid(format!(
                    "mount target `{}` must be absolute",
                    mount.target
                )));
            }
        }
        for cache in &self.caches {
            if !is_label_safe(&cache.name) {
                return Err(invalid(format!(
                    "cache name `{}` must be 1-64 characters of [A-Za-z0-9_.-]",
                    cache.name
                )));
            }
            if !cache.target.starts_with('/') {
                return Err(invalid(format!(
                    "cache target `{}` must be absolute",
                    cache.target
                )));
            }
        }
        if self.memory_limit.is_some_and(|m| m < 6 * 1024 * 1024) {
            return Err(invalid("memory limit must be at least 6 MiB".to_owned()));
        }
        Ok(())
    }
}

fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A host directory bound into the step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only when true.
    pub read_only: bool,
}

/// A named cache volume (`kiln-cache-<name>`) mounted into the step. Caches speed steps up
/// but never change their outputs: a step must produce the same outputs with an empty cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheMount {
    /// Cache name, `[A-Za-z0-9_.-]`; the engine volume is `kiln-cache-<name>`.
    pub name: String,
    /// Absolute path inside the container.
    pub target: String,
}

impl CacheMount {
    /// The engine volume that backs this cache.
    #[must_use]
    pub fn volume_name(&self) -> String {
        format!("kiln-cache-{}", self.name)
    }
}

/// A numeric user and group, as the step runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserId {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl UserId {
    /// The owner of `path`: steps that write into a worktree run as its owner, so git does not
    /// refuse the repository as "dubious ownership" and the files stay the user's.
    pub fn owner_of(path: &Path) -> Result<Self, SandboxError> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).map_err(|source| SandboxError::Worktree {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }
}

/// Network access of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Network {
    /// No network at all (only a loopback interface). The default for every step.
    #[default]
    None,
}

impl Network {
    /// The engine's name for this network mode.
    #[must_use]
    pub(crate) const fn as_engine_mode(self) -> &'static str {
        match self {
            Self::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_step_starts_from_the_fixed_base_environment() {
        let step = StepSpec::new("probe", "img", ["true"]);
        assert_eq!(step.env.get("TZ").map(String::as_str), Some("UTC"));
        assert_eq!(step.env.get("LC_ALL").map(String::as_str), Some("C"));
        assert_eq!(step.env.len(), BASE_ENV.len());
        assert_eq!(step.network, Network::None);
    }

    #[test]
    fn validate_rejects_what_the_engine_would_misread() {
        let ok = StepSpec::new("probe", "img", ["true"]);
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.argv.clear();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.name = "a b".to_owned();
        assert!(bad.validate().is_err());
        let bad = ok.clone().env("A=B", "c");
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.mounts.push(BindMount {
            source: "rel".into(),
            target: "/x".into(),
            read_only: true,
        });
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.caches.push(CacheMount {
            name: "../x".into(),
            target: "/x".into(),
        });
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.memory_limit = Some(1024);
        assert!(bad.validate().is_err());
    }
}
