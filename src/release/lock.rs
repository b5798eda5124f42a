//! Reading a finished release out of the store into its lockfile, and the recipe's outputs
//! back out of a lockfile.

use std::collections::BTreeMap;
use std::path::Path;

use crate::engine::RunReport;
use crate::gomod::ProxyModule;
use crate::hash::{Digest, Sha256Reader};
use crate::lockfile::{
    Artifact, Inputs, K3sResult, LOCKFILE_VERSION, LockedStep, Lockfile,
    Toolchain as LockedToolchain,
};
use crate::store::{LocalStore, OutputRef, Store as _};

use super::recipe::{output, step};
use super::{ReleaseError, Resolved, Toolchain};
use crate::names::Identity;

fn output_of<'a>(
    report: &'a RunReport,
    step: &'static str,
    name: &'static str,
) -> Result<&'a OutputRef, ReleaseError> {
    report
        .steps
        .iter()
        .find(|s| s.name == step)
        .and_then(|s| s.outputs.get(name))
        .ok_or(ReleaseError::MissingOutput { step, output: name })
}

fn text(store: &LocalStore, output: &OutputRef) -> Result<String, ReleaseError> {
    let bytes = store
        .read_sync(&output.digest)?
        .ok_or(ReleaseError::OutputGone {
            digest: output.digest,
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Every file of the stored tree `digest`: path → SHA-256.
pub(crate) fn tree_files(
    store: &LocalStore,
    digest: &Digest,
) -> Result<BTreeMap<String, Digest>, ReleaseError> {
    let file = std::fs::File::open(store.blob_path(digest))
        .map_err(|_| ReleaseError::OutputGone { digest: *digest })?;
    crate::store::tree_manifest(std::io::BufReader::new(file)).map_err(|source| {
        ReleaseError::MalformedOutput {
            step: step::MODULES_FETCH,
            output: output::PROXY,
            reason: format!("its stored tree cannot be read: {source}"),
        }
    })
}

/// The clones kept in the `k3s-download` step's stored `urls` tree `digest`
/// (`clone/<scheme>/<host>/<path>/<ref>.bundle`): `URL#ref` → the commit the bundle's `HEAD`
/// names (its header's first ref line).
pub(crate) fn cloned(
    store: &LocalStore,
    digest: &Digest,
) -> Result<BTreeMap<String, String>, ReleaseError> {
    use std::io::Read as _;
    let malformed = |reason: String| ReleaseError::MalformedOutput {
        step: step::K3S_DOWNLOAD,
        output: output::URLS,
        reason,
    };
    let file = std::fs::File::open(store.blob_path(digest))
        .map_err(|_| ReleaseError::OutputGone { digest: *digest })?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut clones = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| malformed(format!("its stored tree cannot be read: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| malformed(format!("its stored tree cannot be read: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| malformed(format!("a path in it cannot be read: {e}")))?
            .to_string_lossy()
            .into_owned();
        let Some(clone) = path.strip_prefix("clone/") else {
            continue;
        };
        let bad = || malformed(format!("`{path}` is not a pinned clone"));
        let (repo, bundle) = clone.rsplit_once('/').ok_or_else(bad)?;
        let reference = bundle.strip_suffix(".bundle").ok_or_else(bad)?;
        let (scheme, rest) = repo.split_once('/').ok_or_else(bad)?;
        // The header: `# v2 git bundle`, then `<id> <ref>` lines up to an empty line.
        let mut head = Vec::new();
        entry
            .take(64 * 1024)
            .read_to_end(&mut head)
            .map_err(|e| malformed(format!("`{path}` cannot be read: {e}")))?;
        let mut lines = head.split(|b| *b == b'\n');
        if lines.next() != Some(b"# v2 git bundle".as_slice()) {
            return Err(bad());
        }
        let commit = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| std::str::from_utf8(l).ok())
            .find_map(|l| l.strip_suffix(" HEAD"))
            .filter(|id| id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(bad)?;
        clones.insert(format!("{scheme}://{rest}#{reference}"), commit.to_owned());
    }
    Ok(clones)
}

/// The digest of a step output the lockfile records.
fn locked_output(lock: &Lockfile, step: &str, name: &str) -> Option<Digest> {
    lock.steps
        .get(step)
        .and_then(|s| s.outputs.get(name))
        .copied()
}

/// The bundle holding the fork's stamp commit and every new tag.
#[must_use]
pub(crate) fn tag_bundle(lock: &Lockfile) -> Option<Digest> {
    locked_output(lock, step::TAG, output::TAG_BUNDLE)
}

/// The bundle holding the k3s branch's commit.
#[must_use]
pub(crate) fn k3s_bundle(lock: &Lockfile) -> Option<Digest> {
    locked_output(lock, step::K3S_TIDY, output::K3S_BUNDLE)
}

/// The tree of `dist/artifacts`.
#[must_use]
pub(crate) fn artifacts_tree(lock: &Lockfile) -> Option<Digest> {
    locked_output(lock, step::BUILD, output::ARTIFACTS)
}

/// Unpacks the build's artifacts into `dir` (empty) and returns its regular files by relative
/// path (links stay in the tree's digest, which the lockfile records as the build's output).
///
/// # Panics
/// Never: every walked path is below `dir`.
pub(crate) async fn unpack_artifacts(
    store: &LocalStore,
    report: &RunReport,
    dir: &Path,
) -> Result<BTreeMap<String, Artifact>, ReleaseError> {
    let artifacts = *output_of(report, step::BUILD, output::ARTIFACTS)?;
    if !store.unpack(&artifacts.digest, dir).await? {
        return Err(ReleaseError::OutputGone {
            digest: artifacts.digest,
        });
    }
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let entries = std::fs::read_dir(&at).map_err(ReleaseError::io("list", &at))?;
        for entry in entries {
            let entry = entry.map_err(ReleaseError::io("list", &at))?;
            let path = entry.path();
            // Never through a link: a link's target is in the tree (the store checked it) and
            // recorded there; following one could loop (`l -> .`) or count a file twice.
            let kind = entry
                .file_type()
                .map_err(ReleaseError::io("inspect", &path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let file = std::fs::File::open(&path).map_err(ReleaseError::io("read", &path))?;
                let (sha256, size) = Sha256Reader::new(file)
                    .finish()
                    .map_err(ReleaseError::io("hash", &path))?;
                let relative = path
                    .strip_prefix(dir)
                    .expect("walked below dir")
                    .to_string_lossy()
                    .into_owned();
                found.insert(relative, Artifact { sha256, size });
            }
        }
    }
    Ok(found)
}

/// go.sum lines (`module version h1:…`, `module version/go.mod h1:…`) as one entry per module
/// version; a module whose zip was not needed has no `h1`.
fn parse_sums(text: &str, step: &'static str) -> Result<Vec<ProxyModule>, ReleaseError> {
    let mut modules: BTreeMap<(String, String), ProxyModule> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let [module, version, sum] = fields.as_slice() else {
            return Err(ReleaseError::MalformedOutput {
                step,
                output: output::SUMS,
                reason: format!("line `{line}` is not `module version sum`"),
            });
        };
        let (version, is_mod) = version
            .strip_suffix("/go.mod")
            .map_or((*version, false), |v| (v, true));
        let entry = modules
            .entry(((*module).to_owned(), version.to_owned()))
            .or_insert_with(|| ProxyModule {
                module: (*module).to_owned(),
                version: version.to_owned(),
                h1: String::new(),
                go_mod_h1: String::new(),
            });
        if is_mod {
            (*sum).clone_into(&mut entry.go_mod_h1);
        } else {
            (*sum).clone_into(&mut entry.h1);
        }
    }
    Ok(modules.into_values().collect())
}

/// The lockfile of a finished release.
pub(crate) fn lockfile(
    resolved: &Resolved,
    toolchain: &Toolchain,
    identity: &Identity,
    report: &RunReport,
    store: &LocalStore,
    artifacts: BTreeMap<String, Artifact>,
) -> Result<Lockfile, ReleaseError> {
    let malformed = |step, output, reason: String| ReleaseError::MalformedOutput {
        step,
        output,
        reason,
    };
    let mut tags = BTreeMap::new();
    let mut tag_objects = BTreeMap::new();
    for line in text(store, output_of(report, step::TAG, output::TAGS)?)?.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (tag, commit, object) = match fields[..] {
            [tag, commit] => (tag, commit, None),
            [tag, commit, object] => (tag, commit, Some(object)),
            _ => {
                return Err(malformed(
                    step::TAG,
                    output::TAGS,
                    format!("line `{line}` is not `tag commit [tag-object]`"),
                ));
            }
        };
        tags.insert(tag.to_owned(), commit.to_owned());
        if let Some(object) = object {
            tag_objects.insert(tag.to_owned(), object.to_owned());
        }
    }
    report_dropped_patches(
        resolved,
        &text(store, output_of(report, step::REBASE, output::PATCHES)?)?,
    );
    let modules = parse_sums(
        &text(store, output_of(report, step::MODULES, output::SUMS)?)?,
        step::MODULES,
    )?;
    // A release with third-party modules fetched them in its one step with network.
    let (third_party, fetched) = if report.steps.iter().any(|s| s.name == step::MODULES_FETCH) {
        let sums = parse_sums(
            &text(store, output_of(report, step::MODULES_FETCH, output::SUMS)?)?,
            step::MODULES_FETCH,
        )?;
        let proxy = output_of(report, step::MODULES_FETCH, output::PROXY)?;
        (sums, tree_files(store, &proxy.digest)?)
    } else {
        (Vec::new(), BTreeMap::new())
    };
    // What scripts/download fetched, by URL (its tree keeps `<scheme>/<host>/<path>`), and
    // what k3s's scripts cloned (`clone/<scheme>/<host>/<path>/<ref>.bundle`).
    let (downloads, clones) = if report.steps.iter().any(|s| s.name == step::K3S_DOWNLOAD) {
        let urls = output_of(report, step::K3S_DOWNLOAD, output::URLS)?;
        let mut downloads = BTreeMap::new();
        for (path, digest) in tree_files(store, &urls.digest)? {
            if path.starts_with("clone/") {
                continue;
            }
            if let Some((scheme, rest)) = path.split_once('/') {
                downloads.insert(format!("{scheme}://{rest}"), digest);
            }
        }
        (downloads, cloned(store, &urls.digest)?)
    } else {
        (BTreeMap::new(), BTreeMap::new())
    };
    let k3s_commit = text(store, output_of(report, step::K3S_TIDY, output::HEAD)?)?
        .trim()
        .to_owned();
    let steps = report
        .steps
        .iter()
        .map(|s| {
            let outputs = s
                .outputs
                .iter()
                .map(|(name, o)| (name.clone(), o.digest))
                .collect();
            (
                s.name.clone(),
                LockedStep {
                    key: s.key,
                    outputs,
                },
            )
        })
        .collect();
    let names = resolved.names.clone();
    Ok(Lockfile {
        version: LOCKFILE_VERSION,
        inputs: Inputs {
            old_k8s_commit: resolved.old_commit.clone(),
            new_k8s_commit: resolved.new_commit.clone(),
            old_fork_commit: resolved.old_fork_commit.clone(),
            patches: resolved.patches.clone(),
            go_versions: BTreeMap::from([
                (names.old_k8s().to_string(), resolved.old_go.to_string()),
                (names.new_k8s().to_string(), names.go_version().to_string()),
            ]),
            k3s_release_branch_commit: resolved.k3s_commit.clone(),
            k3s_branch: resolved.k3s_branch.clone(),
            toolchain: LockedToolchain {
                image: toolchain.image.identity,
                go: toolchain.go.clone(),
                archive: toolchain.archive,
                go_version: toolchain.go_version.clone(),
            },
            identity: identity.clone(),
            source_date_epoch: resolved.source_date_epoch,
            extra_modules: resolved
                .modules
                .iter()
                .map(|m| (m.path.clone(), m.tags.clone()))
                .collect(),
        },
        steps,
        tags,
        tag_objects,
        modules,
        third_party,
        fetched,
        downloads,
        clones,
        k3s: K3sResult {
            branch: names.new_fork_tag().to_string(),
            commit: k3s_commit,
        },
        artifacts,
        release: names,
    })
}

/// Says so when the rebase carried fewer patches than the old release had (`carried`: the
/// rebase's `commit title` lines): git drops a patch that became empty on the new upstream
/// tag, which usually means upstream took it; the captain should know which.
fn report_dropped_patches(resolved: &Resolved, carried: &str) {
    let count = carried.lines().count();
    // A rebase flattens merges: count what it carries, commits with one parent.
    let Ok(old) = crate::git::output(
        &resolved.fork,
        &[
            "rev-list",
            "--count",
            "--no-merges",
            &format!("{}..{}", resolved.old_commit, resolved.patches_tip),
        ],
    ) else {
        return;
    };
    let old: usize = old.trim().parse().unwrap_or(count);
    if count == old {
        return;
    }
    let carried_titles: std::collections::BTreeSet<&str> = carried
        .lines()
        .filter_map(|line| line.split_once(' ').map(|(_, title)| title))
        .collect();
    let old_titles = crate::git::output(
        &resolved.fork,
        &[
            "log",
            "--reverse",
            "--no-merges",
            "--format=%s",
            &format!("{}..{}", resolved.old_commit, resolved.patches_tip),
        ],
    )
    .unwrap_or_default();
    let dropped: Vec<&str> = old_titles
        .lines()
        .filter(|title| !carried_titles.contains(title))
        .collect();
    tracing::warn!(
        "the rebase onto {} carried {count} of the old release's {} patches; not carried \
         (empty on the new tag, so probably taken upstream): {}",
        resolved.names.new_k8s(),
        old,
        if dropped.is_empty() {
            "(titles unchanged; compare the lockfile's patches with the new tag's history)"
                .to_owned()
        } else {
            dropped.join("; ")
        }
    );
}
