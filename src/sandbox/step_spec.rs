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
        if self.user.is_some_and(UserId::is_root) {
            return Err(invalid(
                "steps never run as root: lend a root-owned work tree to the build user".into(),
            ));
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

/// Cache names kiln's own steps use: the release's Go build caches and what its fetch steps
/// fetched. Plan files may not name them.
pub const RESERVED_CACHE_PREFIX: &str = "kiln-";

/// Whether a cache name given by a user (a plan file, `kiln sandbox run --cache`) could reach
/// a volume of kiln's own steps: one starting with [`RESERVED_CACHE_PREFIX`], or holding it
/// further in (a namespaced volume is `kiln-cache-<ns>-<name>-u<uid>`, so the plain name
/// `<ns>-kiln-…` would be the same volume).
#[must_use]
pub fn is_reserved_cache_name(name: &str) -> bool {
    name.contains(RESERVED_CACHE_PREFIX)
}

/// A named cache volume (`kiln-cache-<name>-u<uid>`) mounted into the step. Caches speed steps up
/// but never change their outputs: a step must produce the same outputs with an empty cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheMount {
    /// Cache name, `[A-Za-z0-9_.-]`; the engine volume is `kiln-cache-<name>-u<uid>`.
    pub name: String,
    /// Absolute path inside the container.
    pub target: String,
}

impl CacheMount {
    /// The engine volume that backs this cache for steps running as `user`. Each uid has its
    /// own: a cache another uid wrote is not writable by this one, and must not feed its
    /// builds.
    #[must_use]
    pub fn volume_name(&self, user: UserId) -> String {
        format!("kiln-cache-{}-u{}", self.name, user.uid)
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
    /// The build user of kiln's toolchain image (`kiln`, 1000:1000): who a step runs as when
    /// its work tree belongs to root. No step ever runs as root.
    pub const BUILD: Self = Self {
        uid: 1000,
        gid: 1000,
    };

    /// Whether this is root's uid or gid.
    #[must_use]
    pub fn is_root(self) -> bool {
        self.uid == 0 || self.gid == 0
    }

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

/// Work trees lent to a step's user. Their owner runs the step, unless that is root (kiln run
/// as root): then every entry is handed to [`UserId::BUILD`] (`lchown`, links not followed)
/// for the step, and [`LentTrees::give_back`] returns them afterwards. The step never runs as
/// root, and git inside sees a repository its own user owns.
#[derive(Debug)]
pub struct LentTrees {
    user: UserId,
    lent: Vec<(std::path::PathBuf, UserId)>,
}

impl LentTrees {
    /// Lends `dirs` (all owned by the same user as the first) to the step's user.
    pub fn lend(dirs: &[&Path]) -> Result<Self, SandboxError> {
        let Some(first) = dirs.first() else {
            return Ok(Self {
                user: UserId::BUILD,
                lent: Vec::new(),
            });
        };
        let owner = UserId::owner_of(first)?;
        if !owner.is_root() {
            return Ok(Self {
                user: owner,
                lent: Vec::new(),
            });
        }
        let mut lent = Vec::new();
        for dir in dirs {
            let original = UserId::owner_of(dir)?;
            chown_tree(dir, UserId::BUILD)?;
            lent.push((dir.to_path_buf(), original));
        }
        Ok(Self {
            user: UserId::BUILD,
            lent,
        })
    }

    /// Who the step runs as.
    #[must_use]
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Returns every lent tree (including what the step added) to its owner.
    pub fn give_back(self) -> Result<(), SandboxError> {
        for (dir, owner) in &self.lent {
            chown_tree(dir, *owner)?;
        }
        Ok(())
    }
}

/// `lchown -R`: every entry below and including `dir`, links themselves, never their targets.
fn chown_tree(dir: &Path, to: UserId) -> Result<(), SandboxError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| SandboxError::Worktree { path, source }
    };
    std::os::unix::fs::lchown(dir, Some(to.uid), Some(to.gid)).map_err(fail(dir))?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).map_err(fail(&at))? {
            let entry = entry.map_err(fail(&at))?;
            let path = entry.path();
            std::os::unix::fs::lchown(&path, Some(to.uid), Some(to.gid)).map_err(fail(&path))?;
            if entry.file_type().map_err(fail(&path))?.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// Network access of a step.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Network {
    /// No network at all (only a loopback interface). The default for every step.
    #[default]
    None,
    /// The engine host's network, loopback included: fetch steps only, whose every output is
    /// checked against its pin.
    Host,
    /// A network the engine already has, by name (kiln.toml's `[go] fetch-network`): fetch
    /// steps only, as `Host`.
    Named(String),
}

impl Network {
    /// The network a fetch step is given for `name`: `host`, or a network the engine has
    /// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters). `none` is refused: a fetch step
    /// without network could only fetch nothing.
    ///
    /// # Errors
    /// Why `name` is not one.
    pub fn for_fetch(name: &str) -> Result<Self, String> {
        let valid = name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        match name {
            "host" => Ok(Self::Host),
            "none" => Err(
                "a fetch step needs a network; `none` would fetch nothing (to run from what the \
                 store holds, use `kiln verify --offline`)"
                    .into(),
            ),
            _ if valid => Ok(Self::Named(name.to_owned())),
            _ => Err(format!(
                "`{name}` is not an engine network name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"
            )),
        }
    }

    /// The engine's name for this network mode.
    #[must_use]
    pub(crate) fn as_engine_mode(&self) -> &str {
        match self {
            Self::None => "none",
            Self::Host => "host",
            Self::Named(name) => name,
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
    fn a_fetch_network_is_host_or_a_plain_engine_network_name() {
        assert_eq!(Network::for_fetch("host"), Ok(Network::Host));
        assert_eq!(
            Network::for_fetch("kiln-fetch_1.a"),
            Ok(Network::Named("kiln-fetch_1.a".into()))
        );
        for bad in ["none", "", "-x", "a b", "a/b", "$(id)", &"n".repeat(65)] {
            assert!(Network::for_fetch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_rejects_what_the_engine_would_misread() {
        let ok = StepSpec::new("probe", "img", ["true"]);
        assert!(ok.validate().is_ok());
        let mut root = ok.clone();
        root.user = Some(UserId { uid: 0, gid: 0 });
        assert!(root.validate().is_err(), "a root step was accepted");
        root.user = Some(UserId { uid: 1000, gid: 0 });
        assert!(root.validate().is_err(), "root's group was accepted");
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

#[cfg(test)]
mod lent_tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn a_root_owned_tree_is_lent_to_the_build_user_and_given_back() {
        if !rustix::process::geteuid().is_root() {
            // Only root can hand files to another user; the test command runs as root.
            // The test command (KILN_TEST_DOCKER=1) runs as root: there, this is a failure.
            assert!(
                std::env::var("KILN_TEST_DOCKER").as_deref() != Ok("1"),
                "KILN_TEST_DOCKER=1 but not root: this test needs root"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("out");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
        let lent = LentTrees::lend(&[&tree]).unwrap();
        assert_eq!(lent.user(), UserId::BUILD);
        assert_eq!(
            UserId::owner_of(&tree.join("a/b/f")).unwrap(),
            UserId::BUILD
        );
        // The link itself changed hands; its target did not.
        assert_eq!(
            std::fs::symlink_metadata(tree.join("link")).unwrap().uid(),
            1000
        );
        assert_eq!(std::fs::metadata("/etc/passwd").unwrap().uid(), 0);
        std::fs::write(tree.join("a/new"), b"y").unwrap();
        lent.give_back().unwrap();
        for path in ["a/b/f", "a/new", "a"] {
            assert!(
                UserId::owner_of(&tree.join(path)).unwrap().is_root(),
                "{path}"
            );
        }
        // A tree a user owns is not touched: the step runs as that user.
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::os::unix::fs::lchown(&mine, Some(1234), Some(1234)).unwrap();
        let lent = LentTrees::lend(&[&mine]).unwrap();
        assert_eq!(
            lent.user(),
            UserId {
                uid: 1234,
                gid: 1234
            }
        );
    }
}
