//! Third-party modules as fixed outputs: when k3s requires modules kiln does not serve itself
//! (anything but the fork's and `[[modules]]`), a `modules-fetch` step — the release's only
//! step with network — resolves k3s's whole module graph after the go.mod edit, from kiln's
//! own proxy first and the configured module proxy after it, with Go's checksum database on
//! for every path kiln does not serve. Its output is a GOPROXY tree of exactly what was
//! fetched plus its go.sum lines; `k3s-tidy` and `build` then run offline against kiln's proxy
//! and that tree, and the lockfile lists every third-party module with its sums.

/// Where third-party modules come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FetchConfig {
    /// The module proxy's base URL (`[go] proxy`, `KILN_GO_PROXY`, `GOPROXY`; default the
    /// public one); `None`: none may be asked.
    pub(crate) proxy: Option<String>,
    /// Path prefixes exempt from the checksum database besides kiln's own (`[go] nosumdb`).
    pub(crate) nosumdb: Vec<String>,
    /// What the fetch step's outputs must be: the release's existing lockfile's record of it
    /// (empty for a first release, whose fetch is trusted on first use and recorded).
    pub(crate) pins: std::collections::BTreeMap<String, crate::hash::Digest>,
    /// The network the fetch steps run on (`[go] fetch-network`; the host's by default).
    pub(crate) network: crate::sandbox::Network,
    /// What the `k3s-download` step's outputs must be, as `pins` for modules.
    pub(crate) download_pins: std::collections::BTreeMap<String, crate::hash::Digest>,
    /// Where `scripts/download`'s URLs are fetched from instead (`KILN_DOWNLOAD_MIRROR`,
    /// `[release] download-mirror`: `MIRROR/<host>/<path>`); not part of any key.
    pub(crate) download_mirror: Option<String>,
}

impl FetchConfig {
    /// Pins the fetch steps to what `lock` recorded for them, if anything.
    pub(crate) fn pinned_by(mut self, lock: &crate::lockfile::Lockfile) -> Self {
        if let Some(step) = lock.steps.get(super::step::MODULES_FETCH) {
            self.pins.clone_from(&step.outputs);
        }
        if let Some(step) = lock.steps.get(super::step::K3S_DOWNLOAD) {
            self.download_pins.clone_from(&step.outputs);
        }
        self
    }
}

/// A `modules-fetch` step refused for fetching other content than its pin: names each file
/// that differs from what `held` (the lockfile the pin came from) recorded as fetched — a
/// `.zip`, `.mod` or `.info` of a module version, shown as `module@version` — read from the
/// refused tree, which the store keeps until gc. A `k3s-download` step so refused names each
/// URL and cloned repository#ref whose content differs. Any other error is returned as it is.
pub(crate) fn explain_pin_mismatch(
    mut error: super::ReleaseError,
    held: Option<&crate::lockfile::Lockfile>,
    store: &crate::store::LocalStore,
) -> super::ReleaseError {
    if let super::ReleaseError::Engine(crate::engine::EngineError::PinMismatch {
        step,
        output,
        actual,
        changes,
        ..
    }) = &mut error
        && step == super::step::MODULES_FETCH
        && output == super::recipe::output::PROXY
        && let Some(held) = held.filter(|h| !h.fetched.is_empty())
        && let Ok(now) = super::lock::tree_files(store, actual)
    {
        *changes = tree_changes(&held.fetched, &now);
    } else if let super::ReleaseError::Engine(crate::engine::EngineError::PinMismatch {
        step,
        output,
        actual,
        changes,
        ..
    }) = &mut error
        && step == super::step::K3S_DOWNLOAD
        && output == super::recipe::output::URLS
        && let Some(held) = held.filter(|h| !h.downloads.is_empty() || !h.clones.is_empty())
        && let Ok(files) = super::lock::tree_files(store, actual)
        && let Ok(clones) = super::lock::cloned(store, actual)
    {
        // By URL (and repository#ref), as the lockfile lists them.
        let now: std::collections::BTreeMap<String, crate::hash::Digest> = files
            .into_iter()
            .filter(|(path, _)| !path.starts_with("clone/"))
            .filter_map(|(path, digest)| {
                let (scheme, rest) = path.split_once('/')?;
                Some((format!("{scheme}://{rest}"), digest))
            })
            .collect();
        let mut found = tree_changes(&held.downloads, &now);
        found.extend(tree_changes(&held.clones, &clones));
        *changes = found;
    }
    error
}

/// `changed P (pinned D, now D)`, `added P` and `removed P` for every path whose file differs
/// between `was` and `now`, in path order.
pub(crate) fn tree_changes<V: PartialEq + std::fmt::Display>(
    was: &std::collections::BTreeMap<String, V>,
    now: &std::collections::BTreeMap<String, V>,
) -> Vec<String> {
    let paths: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    paths
        .into_iter()
        .filter_map(|path| match (was.get(path), now.get(path)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("changed {path} (pinned {a}, now {b})")),
            (None, Some(_)) => Some(format!("added {path}")),
            (Some(_), None) => Some(format!("removed {path}")),
            (None, None) => None,
        })
        .collect()
}

/// The module paths `go_mod` requires that none of `served` (kiln's own module path
/// prefixes) provides, after its `replace` directives: what only a module proxy has.
pub(crate) fn third_party_requires(go_mod: &str, served: &[String]) -> Vec<String> {
    let mut requires = Vec::new();
    let mut replaces = std::collections::BTreeMap::new();
    let mut block: Option<&str> = None;
    for raw in go_mod.lines() {
        let line = raw.split("//").next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line == ")" {
            block = None;
            continue;
        }
        let (verb, rest) = match block {
            Some(verb) => (verb, line),
            None => match line.split_once(char::is_whitespace) {
                Some((verb @ ("require" | "replace"), rest)) => {
                    let rest = rest.trim();
                    if rest == "(" {
                        block = Some(verb);
                        continue;
                    }
                    (verb, rest)
                }
                Some((_, rest)) if rest.trim() == "(" => {
                    block = Some("other");
                    continue;
                }
                _ => continue,
            },
        };
        match verb {
            "require" => {
                if let Some(path) = rest.split_whitespace().next() {
                    requires.push(path.to_owned());
                }
            }
            "replace" => {
                if let Some((from, to)) = rest.split_once("=>") {
                    let from = from.split_whitespace().next().unwrap_or("");
                    let to = to.split_whitespace().next().unwrap_or("");
                    replaces.insert(from.to_owned(), to.to_owned());
                }
            }
            _ => {}
        }
    }
    let is_served = |path: &str| {
        served
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{p}/")))
    };
    let mut third_party: Vec<String> = requires
        .into_iter()
        .filter(|path| {
            let target = replaces.get(path).map_or(path.as_str(), String::as_str);
            // A replacement by a local directory is k3s's own source.
            !(target.starts_with("./") || target.starts_with("../") || is_served(target))
        })
        .collect();
    third_party.sort();
    third_party.dedup();
    third_party
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_fetch_is_named_file_by_file_and_module_by_module() {
        use crate::hash::Digest;
        let was = std::collections::BTreeMap::from([
            ("github.com/a/b/@v/v1.0.0.info".to_owned(), Digest::of(b"1")),
            ("github.com/a/b/@v/v1.0.0.zip".to_owned(), Digest::of(b"2")),
            ("github.com/!c/d/@v/v2.0.0.mod".to_owned(), Digest::of(b"3")),
        ]);
        let mut now = was.clone();
        now.insert("github.com/a/b/@v/v1.0.0.zip".into(), Digest::of(b"x"));
        now.remove("github.com/!c/d/@v/v2.0.0.mod");
        now.insert("github.com/e/f/@v/list".into(), Digest::of(b"4"));
        let changes = tree_changes(&was, &now);
        assert_eq!(
            changes,
            [
                "removed github.com/!c/d/@v/v2.0.0.mod".to_owned(),
                format!(
                    "changed github.com/a/b/@v/v1.0.0.zip (pinned {}, now {})",
                    Digest::of(b"2"),
                    Digest::of(b"x")
                ),
                "added github.com/e/f/@v/list".to_owned(),
            ]
        );
        let error = crate::engine::EngineError::PinMismatch {
            step: "modules-fetch".into(),
            output: "proxy/".into(),
            expected: Digest::of(b"a"),
            actual: Digest::of(b"b"),
            changes,
        };
        let text = error.to_string();
        assert!(
            text.ends_with(&format!(
                "What differs:\n  removed github.com/C/d@v2.0.0 (mod)\n  changed \
                 github.com/a/b@v1.0.0 (zip) (pinned {}, now {})\n  added github.com/e/f/@v/list",
                Digest::of(b"2"),
                Digest::of(b"x")
            )),
            "{text}"
        );
    }

    #[test]
    fn only_modules_kiln_does_not_serve_are_third_party() {
        let go_mod = "module github.com/k3s-io/k3s\n\ngo 1.20\n\nreplace (\n\
                      \tk8s.io/api => github.com/k3s-io/kubernetes/staging/src/k8s.io/api v1.28.1-k3s1\n\
                      \tk8s.io/kubernetes => github.com/k3s-io/kubernetes v1.28.1-k3s1 // the fork\n\
                      \tgithub.com/k3s-io/local => ./local\n)\n\n\
                      replace go.etcd.io/etcd/api/v3 => github.com/k3s-io/etcd/api/v3 v3.5.9-k3s1\n\n\
                      require (\n\tk8s.io/api v0.28.1\n\tk8s.io/kubernetes v1.28.1\n\
                      \tgithub.com/k3s-io/helper v0.28.1\n\tgithub.com/k3s-io/local v0.0.0\n\
                      \tgo.etcd.io/etcd/api/v3 v3.5.9 // indirect\n\
                      \tgithub.com/kiln-demo/legacy v2.1.0+incompatible\n)\n\n\
                      require github.com/kiln-demo/semver v1.2.0\n\n\
                      exclude (\n\tgithub.com/x/y v1.0.0\n)\n";
        let served = vec![
            "github.com/k3s-io/kubernetes".to_owned(),
            "github.com/k3s-io/helper".to_owned(),
        ];
        assert_eq!(
            third_party_requires(go_mod, &served),
            vec![
                "github.com/kiln-demo/legacy".to_owned(),
                "github.com/kiln-demo/semver".to_owned(),
                "go.etcd.io/etcd/api/v3".to_owned(),
            ]
        );
        // Without third-party requirements there is nothing to fetch.
        assert!(
            third_party_requires(
                "module m\n\nrequire k8s.io/api v0.28.1\nreplace k8s.io/api => github.com/k3s-io/kubernetes/staging/src/k8s.io/api v1\n",
                &served
            )
            .is_empty()
        );
    }
}
