//! Resolving a release's inputs: mirrors of the repositories under the store, tags, commit
//! ids, Go versions and the pinned clock. Blocking (git): run off the async threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::git::{self, Location};
use crate::names::{self, GoVersion, K8sVersion, ReleaseNames, ReleaseVersions, RepoFacts};

use super::{ReleaseError, RepoSet, ServedModule};

/// What a release resolves to before its toolchain image is chosen.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    /// The names.
    pub(crate) names: ReleaseNames,
    /// The upstream mirror (under the store).
    pub(crate) upstream: PathBuf,
    /// The fork's mirror.
    pub(crate) fork: PathBuf,
    /// k3s's mirror.
    pub(crate) k3s: PathBuf,
    /// Commit of the old upstream tag.
    pub(crate) old_commit: String,
    /// Commit of the new upstream tag.
    pub(crate) new_commit: String,
    /// Commit of the old fork tag.
    pub(crate) old_fork_commit: String,
    /// k3s release branch head.
    pub(crate) k3s_commit: String,
    /// The k3s branch it is the head of: asked for, else the minor's release branch when k3s
    /// has it, else k3s's default branch (the newest minor is released from `main`).
    pub(crate) k3s_branch: String,
    /// The old release's k3s patches, `OLD_K8S..PATCHES_TIP`, oldest first.
    pub(crate) patches: Vec<String>,
    /// The last of them: the old fork tag's parent when the tag sits on a stamp commit,
    /// else the tag's commit itself (a tag.sh that commits nothing tags the patch head).
    pub(crate) patches_tip: String,

    /// `.go-version` at the old upstream tag.
    pub(crate) old_go: GoVersion,
    /// `SOURCE_DATE_EPOCH`: the new upstream tag's commit time.
    pub(crate) source_date_epoch: i64,
    /// The new fork tag's commit if the fork already has it.
    pub(crate) existing_new_tag: Option<String>,
    /// Extra modules.
    pub(crate) modules: Vec<ServedModule>,
}

/// `.go-version` at `tag` in the upstream mirror.
fn go_version_at(upstream: &Path, tag: K8sVersion) -> Result<GoVersion, ReleaseError> {
    let text = git::read_file(upstream, &tag.to_string(), ".go-version")?
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or(ReleaseError::NoGoVersion { tag })?;
    text.parse()
        .map_err(|_| ReleaseError::BadGoVersion { tag, text })
}

/// Every name of the release `versions` names, as `kiln versions` shows them: checked against
/// the repositories' listings (as a release lists them) before any mirror is made; the Go
/// version from the upstream mirror, fetched only when it does not hold what was listed.
/// Also says whether the fork already has the new tag.
pub(crate) fn derive_names(
    repos: &RepoSet,
    versions: &ReleaseVersions,
    git_dir: &Path,
) -> Result<(ReleaseNames, bool), ReleaseError> {
    let Listing {
        upstream: (upstream_listed, upstream, upstream_held),
        fork: (_, fork, _),
        k3s: (_, k3s, _),
    } = list_remotes(repos, versions, git_dir)?;
    let facts = RepoFacts {
        upstream,
        fork,
        k3s,
    };
    names::old_fork_tag(versions, &facts)?;
    let upstream = match upstream_held {
        Some(path) => path,
        None => git::sync_mirror(git_dir, &repos.upstream, None, Some(&upstream_listed))?.0,
    };
    let go = go_version_at(&upstream, versions.new_version())?;
    let names = names::derive(versions, &facts, go)?;
    let exists = facts.fork.contains(&names.new_fork_tag().to_string());
    Ok((names, exists))
}

/// Resolves everything a release reads.
pub(crate) fn resolve(
    repos: &RepoSet,
    versions: &ReleaseVersions,
    k3s_branch: Option<&str>,
    git_dir: &Path,
) -> Result<Resolved, ReleaseError> {
    let listing = list_remotes(repos, versions, git_dir)?;
    resolve_listed(listing, repos, versions, k3s_branch, git_dir)
}

/// One remote's branches and tags as listed, their tag names, and its mirror when that
/// already holds exactly them.
type ListedRemote = (git::Listed, Vec<String>, Option<PathBuf>);

/// The three remotes of a release as listed: clones, fetches and repacks nothing (a held
/// mirror may only get its two settings, see `git::held_mirror`), so it may run while the
/// engine is still being asked and before any name is checked.
#[derive(Debug)]
pub(crate) struct Listing {
    upstream: ListedRemote,
    fork: ListedRemote,
    k3s: ListedRemote,
}

/// Lists the release's three remotes at once (see [`Listing`]), each for the refs the
/// release reads of it (see [`prefixes`]).
pub(crate) fn list_remotes(
    repos: &RepoSet,
    versions: &ReleaseVersions,
    git_dir: &Path,
) -> Result<Listing, ReleaseError> {
    // Every name is checked against the repositories' listings (one each, the release's own
    // refs with their objects) before any mirror is cloned or fetched: a typo costs nothing
    // and leaves the store as it was. A mirror already holding what was listed is not
    // fetched.
    // At once: each is a round trip to a remote. Each also finds whether its mirror already
    // holds what was listed (which changes nothing), while the others are still listed.
    // The fork is a second copy of upstream's history: its mirror borrows upstream's objects.
    let upstream_mirror = git::mirror_path(git_dir, &repos.upstream);
    let [upstream_prefixes, fork_prefixes, k3s_prefixes] = prefixes(versions);
    let [upstream, fork, k3s] = std::thread::scope(|scope| {
        [
            (&repos.upstream, None, &upstream_prefixes),
            (&repos.fork, Some(upstream_mirror.as_path()), &fork_prefixes),
            (&repos.k3s, None, &k3s_prefixes),
        ]
        .map(|(location, lender, prefixes)| {
            scope.spawn(move || -> Result<_, git::GitError> {
                let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
                let listed = git::remote_refs(location, &prefixes)?;
                tracing::debug!(%location, refs = listed.refs.len(), "listed");
                let names = git::tag_names(&listed.refs, Some(location));
                let held = git::held_mirror(git_dir, location, lender, &listed)?;
                Ok((listed, names, held))
            })
        })
        .map(|listing| listing.join().expect("listing refs does not panic"))
    });
    Ok(Listing {
        upstream: upstream?,
        fork: fork?,
        k3s: k3s?,
    })
}

/// What a release reads of upstream, the fork and k3s, as ref-name prefixes: the tags of its
/// two versions in upstream and the fork (the fork's with any `-k3sN`), and of k3s its tags
/// of the new version (RCs and GA) and its branches (the one released from). Nothing else
/// decides a name or a commit the release takes, so a tag of another minor, and each of the
/// fork's per-module tags (thousands: every release tags each staging module), are never
/// listed. A version's prefix also covers longer versions (`v1.28.1` covers `v1.28.10`):
/// names are parsed, not prefix-matched.
fn prefixes(versions: &ReleaseVersions) -> [Vec<String>; 3] {
    let tags = [versions.old(), versions.new_version()].map(|v| format!("refs/tags/{v}"));
    [
        tags.to_vec(),
        tags.to_vec(),
        vec![
            "refs/heads/".to_owned(),
            format!("refs/tags/{}", versions.new_version()),
        ],
    ]
}

/// [`resolve`] once the remotes are listed.
pub(crate) fn resolve_listed(
    listing: Listing,
    repos: &RepoSet,
    versions: &ReleaseVersions,
    k3s_branch: Option<&str>,
    git_dir: &Path,
) -> Result<Resolved, ReleaseError> {
    let (upstream_refs, upstream_names, upstream_held) = listing.upstream;
    let (fork_refs, fork_names, fork_held) = listing.fork;
    let (k3s_refs, k3s_names, k3s_held) = listing.k3s;
    let listed_facts = RepoFacts {
        upstream: upstream_names,
        fork: fork_names,
        k3s: k3s_names,
    };
    names::old_fork_tag(versions, &listed_facts)?;
    // Only now is a mirror cloned or fetched: every name was found. The names as the mirrors,
    // which the steps read, hold them: what was listed, unless the remote moved between the
    // listing and a fetch.
    let sync = |location, lender, listed: &git::Listed, names, held: Option<PathBuf>| {
        if let Some(path) = held {
            return Ok((path, names));
        }
        let (path, held) = git::sync_mirror(git_dir, location, lender, Some(listed))?;
        let names = if held == listed.refs {
            names
        } else {
            git::tag_names(&held, None)
        };
        Ok::<_, git::GitError>((path, names))
    };
    let RepoFacts {
        upstream: upstream_names,
        fork: fork_names,
        k3s: k3s_names,
    } = listed_facts;
    let (upstream, upstream_names) = sync(
        &repos.upstream,
        None,
        &upstream_refs,
        upstream_names,
        upstream_held,
    )?;
    let (fork, fork_names) = sync(
        &repos.fork,
        Some(&upstream),
        &fork_refs,
        fork_names,
        fork_held,
    )?;
    let (k3s, k3s_names) = sync(&repos.k3s, None, &k3s_refs, k3s_names, k3s_held)?;
    let facts = RepoFacts {
        upstream: upstream_names,
        fork: fork_names,
        k3s: k3s_names,
    };
    let go = go_version_at(&upstream, versions.new_version())?;
    let names = names::derive(versions, &facts, go)?;
    let old_commit = git::resolve_commit(&upstream, &names.old_k8s().to_string())?;
    let new_commit = git::resolve_commit(&upstream, &names.new_k8s().to_string())?;
    let old_fork_commit = git::resolve_commit(&fork, &names.old_fork_tag().to_string())?;
    let k3s_branch = choose_k3s_branch(&k3s, &repos.k3s, k3s_branch, &names.release_branch())?;
    let k3s_commit =
        git::resolve_commit(&k3s, &format!("refs/heads/{k3s_branch}")).map_err(|_| {
            ReleaseError::MissingBranch {
                branch: k3s_branch.clone(),
            }
        })?;
    let old_fork_tag = names.old_fork_tag().to_string();
    let stamp_parent = stamp_parent(&fork, &old_fork_commit, &old_fork_tag)?;
    let patches_tip = stamp_parent.unwrap_or_else(|| {
        tracing::warn!(
            "the old fork tag {old_fork_tag} is not on a stamp commit (one commit titled \
             `{old_fork_tag}` that changes only version/base.go files): its tag.sh tagged the \
             patch head itself, so the rebase carries every commit up to and including the \
             tag's ({old_fork_commit})"
        );
        old_fork_commit.clone()
    });
    let patches = git::output(
        &fork,
        &[
            "rev-list",
            "--reverse",
            &format!("{old_commit}..{patches_tip}"),
        ],
    )?
    .lines()
    .map(str::to_owned)
    .collect();
    let time = git::output(&upstream, &["log", "-1", "--format=%ct", &new_commit])?;
    let source_date_epoch = time.parse().map_err(|_| ReleaseError::CommitTime {
        commit: new_commit.clone(),
        text: time.clone(),
    })?;
    let new_tag = names.new_fork_tag().to_string();
    let existing_new_tag = facts
        .fork
        .contains(&new_tag)
        .then(|| git::resolve_commit(&fork, &new_tag))
        .transpose()?;
    let mut modules = Vec::new();
    for module in &repos.modules {
        let listed = git::remote_refs(&module.repo, &git::ALL_REFS)?;
        let (mirror, held) = git::sync_mirror(git_dir, &module.repo, None, Some(&listed))?;
        let commits = git::tag_commits(&mirror)?;
        let mut tags = BTreeMap::new();
        for tag in git::tag_names(&held, Some(&module.repo)) {
            let commit = match commits.get(&tag) {
                Some(commit) => commit.clone(),
                None => git::resolve_commit(&mirror, &tag)?,
            };
            tags.insert(tag, commit);
        }
        modules.push(ServedModule {
            path: module.path.clone(),
            mirror,
            tags,
        });
    }
    Ok(Resolved {
        old_go: go_version_at(&upstream, names.old_k8s())?,
        names,
        upstream,
        fork,
        k3s,
        old_commit,
        new_commit,
        old_fork_commit,
        k3s_commit,
        k3s_branch,
        patches,
        patches_tip,
        source_date_epoch,
        existing_new_tag,
        modules,
    })
}

/// The parent of `commit` when it is `tag`'s stamp commit: one parent, titled with the tag (and
/// changing only version files, paths ending in `version/base.go`, what every tag.sh that
/// stamps rewrites; more is taken with a warning). `None` for any other commit.
fn stamp_parent(fork: &Path, commit: &str, tag: &str) -> Result<Option<String>, ReleaseError> {
    let header = git::output(fork, &["log", "-1", "--format=%P%n%s", commit])?;
    let mut lines = header.lines();
    let parents: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let title = lines.next().unwrap_or_default();
    let [parent] = parents[..] else {
        return Ok(None);
    };
    if title != tag || parent.is_empty() {
        return Ok(None);
    }
    let changed = git::output(
        fork,
        &[
            "diff-tree",
            "--no-commit-id",
            "--name-only",
            "-r",
            parent,
            commit,
        ],
    )?;
    let others: Vec<&str> = changed
        .lines()
        .filter(|path| *path != "version/base.go" && !path.ends_with("/version/base.go"))
        .collect();
    if !others.is_empty() {
        // Titled with the tag, it is tag.sh's commit all the same: carrying it into the next
        // release would stack stamps.
        tracing::warn!(
            "the old fork tag {tag}'s commit is titled with the tag but changes more than \
             version files ({}); taken as its stamp commit, not carried as a patch",
            others.join(", ")
        );
    }
    Ok(Some(parent.to_owned()))
}

/// The k3s branch the update is branched from: `asked` (which must exist), else `release`
/// (release-X.Y) when the k3s mirror has it, else the default branch the k3s repository names
/// now (asked of `location`, not the mirror's HEAD, which is fixed when it is first cloned).
/// Says which.
pub(crate) fn choose_k3s_branch(
    k3s: &Path,
    location: &Location,
    asked: Option<&str>,
    release: &str,
) -> Result<String, ReleaseError> {
    if let Some(branch) = asked {
        return Ok(branch.to_owned());
    }
    if git::ref_commit(k3s, &format!("refs/heads/{release}"))?.is_some() {
        return Ok(release.to_owned());
    }
    let head = git::default_branch(location)?.ok_or_else(|| ReleaseError::MissingBranch {
        branch: release.to_owned(),
    })?;
    tracing::warn!(
        "k3s has no branch {release}: branching from its default branch {head} (the newest \
         minor is released from it; pass --k3s-branch to choose another)"
    );
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Suffix;

    fn git_in(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t.invalid")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// A repository at `dir/name` with one commit on `master`, the `branches` and the `tags`.
    fn repo(dir: &Path, name: &str, branches: &[&str], tags: &[&str]) -> Location {
        let path = dir.join(name);
        std::fs::create_dir(&path).unwrap();
        git_in(&path, &["init", "--quiet", "-b", "master"]);
        git_in(&path, &["commit", "--quiet", "--allow-empty", "-m", name]);
        for branch in branches {
            git_in(&path, &["branch", branch]);
        }
        for tag in tags {
            git_in(&path, &["tag", "-m", tag, tag]);
        }
        git_in(&path, &["update-ref", "refs/pull/1/head", "HEAD"]);
        Location::parse_in(&path.to_string_lossy(), Path::new("/")).unwrap()
    }

    /// The names a release derives from its narrowed listings are those every tag would give:
    /// the highest `-k3sN` of the old version, the new fork tag found, the next RC after
    /// k3s's own (`v1.28.2` also prefixes `v1.28.20`, whose RCs do not count); and the
    /// fork's per-module tags and other minors' tags are never listed.
    #[test]
    fn the_narrowed_listings_give_the_names_every_tag_gives() {
        let dir = tempfile::tempdir().unwrap();
        let repos = RepoSet {
            upstream: repo(
                dir.path(),
                "upstream",
                &["release-1.28"],
                &["v1.28.1", "v1.28.2", "v1.28.20", "v1.29.0"],
            ),
            fork: repo(
                dir.path(),
                "fork",
                &[],
                &[
                    "v1.28.1-k3s1",
                    "v1.28.1-k3s2",
                    "v1.28.10-k3s3",
                    "v1.28.2-k3s1",
                    "v1.29.0-k3s1",
                    "staging/src/k8s.io/api/v1.28.1-k3s2",
                ],
            ),
            k3s: repo(
                dir.path(),
                "k3s",
                &["release-1.28"],
                &[
                    "v1.28.1+k3s2",
                    "v1.28.2-rc1+k3s1",
                    "v1.28.2-rc2+k3s1",
                    "v1.28.20-rc7+k3s1",
                    "v1.29.0-rc9+k3s1",
                ],
            ),
            modules: Vec::new(),
        };
        let versions = ReleaseVersions::new(
            "v1.28.1".parse().unwrap(),
            "v1.28.2".parse().unwrap(),
            None,
            Suffix(1),
        )
        .unwrap();
        let listing = list_remotes(&repos, &versions, &dir.path().join("git")).unwrap();
        let narrow = RepoFacts {
            upstream: listing.upstream.1.clone(),
            fork: listing.fork.1.clone(),
            k3s: listing.k3s.1.clone(),
        };
        let every = RepoFacts {
            upstream: git::list_tags(&repos.upstream).unwrap(),
            fork: git::list_tags(&repos.fork).unwrap(),
            k3s: git::list_tags(&repos.k3s).unwrap(),
        };
        let go: GoVersion = "1.21.13".parse().unwrap();
        let names = names::derive(&versions, &narrow, go.clone()).unwrap();
        assert_eq!(names, names::derive(&versions, &every, go).unwrap());
        assert_eq!(names.old_fork_tag().to_string(), "v1.28.1-k3s2");
        assert_eq!(names.rc().to_string(), "v1.28.2-rc3+k3s1");
        assert!(narrow.fork.contains(&names.new_fork_tag().to_string()));

        assert_eq!(
            narrow.fork,
            [
                "v1.28.1-k3s1",
                "v1.28.1-k3s2",
                "v1.28.10-k3s3",
                "v1.28.2-k3s1"
            ]
        );
        assert_eq!(narrow.upstream, ["v1.28.1", "v1.28.2", "v1.28.20"]);
        let k3s_refs: Vec<&str> = listing.k3s.0.refs.keys().map(String::as_str).collect();
        assert_eq!(
            k3s_refs,
            [
                "refs/heads/master",
                "refs/heads/release-1.28",
                "refs/tags/v1.28.2-rc1+k3s1",
                "refs/tags/v1.28.2-rc2+k3s1",
                "refs/tags/v1.28.20-rc7+k3s1"
            ]
        );
        // Nothing is cloned by listing.
        assert!(!dir.path().join("git").exists());
    }
}
