//! Which repositories a release reads: `--upstream/--fork/--k3s`, or a `kiln.toml`.
//!
//! ```toml
//! [repos]
//! upstream = "upstream.git"        # paths are relative to kiln.toml; URLs are kept as given
//! fork = "fork.git"
//! k3s = "k3s.git"
//!
//! [[modules]]                      # extra modules k3s requires, served by kiln's proxy
//! path = "github.com/k3s-io/helper"
//! repo = "helper.git"
//!
//! [cache]                          # optional: a shared cache (flags override it)
//! url = "oci://registry.example.com/k3s/kiln-cache"
//! signing-key = "ci.key"           # publish, signed (writers only)
//! trusted-keys = ["ed25519:…"]     # use records signed by these
//! ```

use std::path::Path;

use super::ReleaseError;

/// The repositories of one release, as paths or URLs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RepoSet {
    /// Upstream Kubernetes.
    pub upstream: String,
    /// The k3s-io fork.
    pub fork: String,
    /// k3s.
    pub k3s: String,
    /// Extra modules.
    pub modules: Vec<ExtraModule>,
    /// The shared cache, when kiln.toml names one (its signing key path made absolute).
    pub cache: Option<CacheConfig>,
}

/// A module k3s requires that is neither Kubernetes nor the fork.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtraModule {
    /// Its module path.
    pub path: String,
    /// Its repository (path or URL).
    pub repo: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    repos: Repos,
    #[serde(default)]
    modules: Vec<ExtraModule>,
    #[serde(default)]
    cache: Option<CacheConfig>,
}

/// The shared cache, as `[cache]` in kiln.toml names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheConfig {
    /// `oci://HOST[:PORT]/REPO`.
    pub url: String,
    /// The signing key file (relative to kiln.toml); records are published only with one.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// Public keys whose records are used (`ed25519:…`).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Repos {
    upstream: String,
    fork: String,
    k3s: String,
}

fn is_url(location: &str) -> bool {
    location.contains("://") || location.starts_with("git@")
}

fn resolve(base: &Path, location: &str) -> String {
    if is_url(location) || Path::new(location).is_absolute() {
        location.to_owned()
    } else {
        base.join(location).to_string_lossy().into_owned()
    }
}

/// The repositories: all three flags when given, else `dir/kiln.toml`; a flag overrides the
/// file's entry.
pub fn load_repos(
    dir: &Path,
    upstream: Option<&str>,
    fork: Option<&str>,
    k3s: Option<&str>,
) -> Result<RepoSet, ReleaseError> {
    let cwd = std::fs::canonicalize(dir).map_err(|source| ReleaseError::Io {
        action: "resolve",
        path: dir.to_owned(),
        source,
    })?;
    let path = cwd.join("kiln.toml");
    let from_file = if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|source| ReleaseError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        let config: ConfigFile = toml::from_str(&text).map_err(|e| ReleaseError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Some(config)
    } else {
        None
    };
    let pick = |flag: Option<&str>, file: Option<&str>| -> Option<String> {
        flag.map(|f| resolve(&cwd, f))
            .or_else(|| file.map(|f| resolve(&cwd, f)))
    };
    let repos = from_file.as_ref().map(|c| &c.repos);
    let (Some(upstream), Some(fork), Some(k3s)) = (
        pick(upstream, repos.map(|r| r.upstream.as_str())),
        pick(fork, repos.map(|r| r.fork.as_str())),
        pick(k3s, repos.map(|r| r.k3s.as_str())),
    ) else {
        return Err(ReleaseError::NoRepos { dir: cwd });
    };
    let cache = from_file
        .as_ref()
        .and_then(|c| c.cache.clone())
        .map(|mut c| {
            c.signing_key = c.signing_key.map(|k| resolve(&cwd, &k));
            c
        });
    let modules = from_file
        .map(|c| {
            c.modules
                .into_iter()
                .map(|m| ExtraModule {
                    repo: resolve(&cwd, &m.repo),
                    path: m.path,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(RepoSet {
        upstream,
        fork,
        k3s,
        modules,
        cache,
    })
}
