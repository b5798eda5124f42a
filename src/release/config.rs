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
//! [publish]                        # optional: where the release goes (flags override it)
//! fork-remote = "git@github.com:k3s-io/kubernetes.git"
//! k3s-remote = "git@github.com:k3s-io/k3s.git"
//! registry = "docker.io"
//! kdm = "../kontainer-driver-metadata/channels.yaml"
//! channel = "../k3s/channel.yaml"
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
    #[serde(default)]
    publish: Option<PublishConfig>,
}

/// Where a release goes, as `[publish]` in kiln.toml names it; each is the default of the
/// matching flag of `push`, `verify-tags`, `status`, `images check`, `kdm add` and
/// `channel set-stable`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublishConfig {
    /// The fork's remote (URL, or a path relative to kiln.toml).
    #[serde(default)]
    pub fork_remote: Option<String>,
    /// k3s's remote.
    #[serde(default)]
    pub k3s_remote: Option<String>,
    /// The image registry (`host[:port]`).
    #[serde(default)]
    pub registry: Option<String>,
    /// KDM's channels.yaml (a path relative to kiln.toml).
    #[serde(default)]
    pub kdm: Option<String>,
    /// k3s's channel.yaml.
    #[serde(default)]
    pub channel: Option<String>,
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

/// `dir` made absolute, and its kiln.toml when there is one.
fn read_config(dir: &Path) -> Result<(std::path::PathBuf, Option<ConfigFile>), ReleaseError> {
    let cwd = std::fs::canonicalize(dir).map_err(|source| ReleaseError::Io {
        action: "resolve",
        path: dir.to_owned(),
        source,
    })?;
    let path = cwd.join("kiln.toml");
    if !path.is_file() {
        return Ok((cwd, None));
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ReleaseError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let config: ConfigFile = toml::from_str(&text).map_err(|e| ReleaseError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok((cwd, Some(config)))
}

/// `[publish]` of `dir/kiln.toml`, paths made absolute; empty without a kiln.toml or the table.
/// A kiln.toml that does not parse is an error.
pub fn load_publish(dir: &Path) -> Result<PublishConfig, ReleaseError> {
    let (cwd, config) = read_config(dir)?;
    let publish = config.and_then(|c| c.publish).unwrap_or_default();
    let path = |p: Option<String>| p.map(|p| resolve(&cwd, &p));
    Ok(PublishConfig {
        fork_remote: path(publish.fork_remote),
        k3s_remote: path(publish.k3s_remote),
        registry: publish.registry,
        kdm: path(publish.kdm),
        channel: path(publish.channel),
    })
}

/// The repositories: all three flags when given, else `dir/kiln.toml`; a flag overrides the
/// file's entry.
pub fn load_repos(
    dir: &Path,
    upstream: Option<&str>,
    fork: Option<&str>,
    k3s: Option<&str>,
) -> Result<RepoSet, ReleaseError> {
    let (cwd, from_file) = read_config(dir)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_paths_are_relative_to_kiln_toml_and_urls_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(load_publish(&root).unwrap(), PublishConfig::default());
        std::fs::write(
            root.join("kiln.toml"),
            "[repos]\nupstream = \"u\"\nfork = \"f\"\nk3s = \"k\"\n\n[publish]\n\
             fork-remote = \"git@github.com:k3s-io/kubernetes.git\"\n\
             k3s-remote = \"published/k3s.git\"\nregistry = \"127.0.0.1:5000\"\n\
             kdm = \"../kdm/channels.yaml\"\nchannel = \"/abs/channel.yaml\"\n",
        )
        .unwrap();
        let publish = load_publish(&root).unwrap();
        assert_eq!(
            publish,
            PublishConfig {
                fork_remote: Some("git@github.com:k3s-io/kubernetes.git".into()),
                k3s_remote: Some(root.join("published/k3s.git").display().to_string()),
                registry: Some("127.0.0.1:5000".into()),
                kdm: Some(root.join("../kdm/channels.yaml").display().to_string()),
                channel: Some("/abs/channel.yaml".into()),
            }
        );
        // The repositories still load; an unknown key in [publish] is refused.
        assert_eq!(
            load_repos(&root, None, None, None).unwrap().k3s,
            root.join("k").display().to_string()
        );
        std::fs::write(
            root.join("kiln.toml"),
            "[repos]\nupstream = \"u\"\nfork = \"f\"\nk3s = \"k\"\n[publish]\nremote = \"x\"\n",
        )
        .unwrap();
        assert!(matches!(
            load_publish(&root),
            Err(ReleaseError::Config { .. })
        ));
    }
}
