//! A release's inputs read back from its lockfile, for rebuilding it: the repositories are
//! mirrored as for a release, but every commit, the names, the Go versions, the clock and the
//! extra modules' tags come from the lock, and each locked commit must exist in its mirror.

use std::collections::BTreeMap;
use std::path::Path;

use crate::git;
use crate::lockfile::Lockfile;

use super::{ReleaseError, RepoSet, Resolved, ServedModule};

/// The release inputs `lock` records, against mirrors of `repos` under `git_dir`. Blocking.
pub(crate) fn resolve_locked(
    repos: &RepoSet,
    lock: &Lockfile,
    git_dir: &Path,
) -> Result<Resolved, ReleaseError> {
    let configured: Vec<String> = repos.modules.iter().map(|m| m.path.clone()).collect();
    let locked: Vec<String> = lock.inputs.extra_modules.keys().cloned().collect();
    let mut sorted = configured.clone();
    sorted.sort();
    if sorted != locked {
        return Err(ReleaseError::LockedModules { locked, configured });
    }
    let upstream = git::mirror(git_dir, &repos.upstream)?;
    // The fork is a second copy of upstream's history: its mirror borrows upstream's objects.
    let fork = git::mirror_borrowing(git_dir, &repos.fork, Some(&upstream), None)?;
    let k3s = git::mirror(git_dir, &repos.k3s)?;
    let i = &lock.inputs;
    let need = |repo: &Path, location: &crate::git::Location, what: &str, commit: &str| {
        git::output(
            repo,
            &[
                "cat-file",
                "-e",
                "--end-of-options",
                &format!("{commit}^{{commit}}"),
            ],
        )
        .map(|_| ())
        .map_err(|_| ReleaseError::LockedInputMissing {
            what: what.to_owned(),
            commit: commit.to_owned(),
            repo: location.to_string(),
        })
    };
    need(
        &upstream,
        &repos.upstream,
        "the old upstream commit",
        &i.old_k8s_commit,
    )?;
    need(
        &upstream,
        &repos.upstream,
        "the new upstream commit",
        &i.new_k8s_commit,
    )?;
    need(
        &fork,
        &repos.fork,
        "the old fork commit",
        &i.old_fork_commit,
    )?;
    for patch in &i.patches {
        need(&fork, &repos.fork, "the k3s patch", patch)?;
    }
    need(
        &k3s,
        &repos.k3s,
        "the k3s release branch commit",
        &i.k3s_release_branch_commit,
    )?;
    let mut modules = Vec::new();
    for module in &repos.modules {
        let mirror = git::mirror(git_dir, &module.repo)?;
        let tags: BTreeMap<String, String> = i.extra_modules[&module.path].clone();
        for commit in tags.values() {
            need(
                &mirror,
                &module.repo,
                &format!("{} commit", module.path),
                commit,
            )?;
        }
        modules.push(ServedModule {
            path: module.path.clone(),
            mirror,
            tags,
        });
    }
    let old_k8s = lock.release.old_k8s();
    let old_go = i
        .go_versions
        .get(&old_k8s.to_string())
        .ok_or(ReleaseError::NoGoVersion { tag: old_k8s })?;
    let old_go = old_go.parse().map_err(|_| ReleaseError::BadGoVersion {
        tag: old_k8s,
        text: old_go.clone(),
    })?;
    Ok(Resolved {
        names: lock.release.clone(),
        upstream,
        fork,
        k3s,
        old_commit: i.old_k8s_commit.clone(),
        new_commit: i.new_k8s_commit.clone(),
        old_fork_commit: i.old_fork_commit.clone(),
        k3s_commit: i.k3s_release_branch_commit.clone(),
        k3s_branch: if i.k3s_branch.is_empty() {
            lock.release.release_branch()
        } else {
            i.k3s_branch.clone()
        },
        patches: i.patches.clone(),
        // The patches end where the stamp commit (if any) begins: the last one locked.
        patches_tip: i.patches.last().unwrap_or(&i.old_k8s_commit).clone(),
        old_go,
        source_date_epoch: i.source_date_epoch,
        existing_new_tag: None,
        modules,
    })
}
