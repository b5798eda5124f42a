//! Resolving a release's inputs: mirrors of the repositories under the store, tags, commit
//! ids, Go versions, the pinned identity and clock.

use std::collections::BTreeMap;
use std::path::Path;

use crate::git;

use super::{
    Identity, ReleaseError, ReleaseNames, RepoFacts, RepoSet, ServedModule, check_pair, derive,
};

/// What a release resolves to before its toolchain image is chosen.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The names.
    pub names: ReleaseNames,
    /// Mirrors: upstream, fork, k3s.
    pub upstream: std::path::PathBuf,
    /// The fork's mirror.
    pub fork: std::path::PathBuf,
    /// k3s's mirror.
    pub k3s: std::path::PathBuf,
    /// Commits of the old and new upstream tags, the old fork tag, the release branch.
    pub old_commit: String,
    /// New upstream commit.
    pub new_commit: String,
    /// Old fork tag commit.
    pub old_fork_commit: String,
    /// k3s release branch head.
    pub k3s_commit: String,
    /// The old release's k3s patches, `OLD_K8S..OLD_FORK~1`, oldest first.
    pub patches: Vec<String>,
    /// `.go-version` at the old upstream tag.
    pub old_go: String,
    /// `SOURCE_DATE_EPOCH`: the new upstream tag's commit time.
    pub source_date_epoch: i64,
    /// The new fork tag's commit if the fork already has it.
    pub existing_new_tag: Option<String>,
    /// Extra modules.
    pub modules: Vec<ServedModule>,
}

/// The release arguments.
#[derive(Clone, Debug)]
pub struct ReleaseArgs {
    /// `--old`.
    pub old: String,
    /// `--new`.
    pub new: String,
    /// `--old-suffix`.
    pub old_suffix: Option<String>,
    /// `--new-suffix`.
    pub new_suffix: String,
}

fn git_text(repo: &Path, args: &[&str]) -> Result<String, ReleaseError> {
    Ok(git::output(repo, args)?)
}

/// Resolves everything a release reads. Blocking (git); run it off the async threads.
pub fn resolve(
    repos: &RepoSet,
    args: &ReleaseArgs,
    git_dir: &Path,
) -> Result<Resolved, ReleaseError> {
    check_pair(&args.old, &args.new)?;
    // Every name is checked against the repositories' tags (one ls-remote each) before any
    // mirror is cloned or fetched: a typo costs nothing and leaves the store as it was.
    let remote_facts = RepoFacts {
        upstream_tags: git::list_tags(&repos.upstream)?,
        fork_tags: git::list_tags(&repos.fork)?,
        k3s_tags: git::list_tags(&repos.k3s)?,
    };
    derive(
        &args.old,
        &args.new,
        args.old_suffix.as_deref(),
        Some(&args.new_suffix),
        &remote_facts,
        |_| Ok(String::new()),
    )?;
    let upstream = git::mirror(git_dir, &repos.upstream)?;
    let fork = git::mirror(git_dir, &repos.fork)?;
    let k3s = git::mirror(git_dir, &repos.k3s)?;
    let loc = |p: &Path| p.to_string_lossy().into_owned();
    let facts = RepoFacts {
        upstream_tags: git::list_tags(&loc(&upstream))?,
        fork_tags: git::list_tags(&loc(&fork))?,
        k3s_tags: git::list_tags(&loc(&k3s))?,
    };
    let go_at = |tag: &str| -> Result<String, ReleaseError> {
        git::read_file(&upstream, tag, ".go-version")?
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ReleaseError::NoGoVersion {
                tag: tag.to_owned(),
            })
    };
    let names = derive(
        &args.old,
        &args.new,
        args.old_suffix.as_deref(),
        Some(&args.new_suffix),
        &facts,
        |v| go_at(&v.to_string()),
    )?;
    let old_commit = git::resolve_commit(&upstream, &names.old_k8s)?;
    let new_commit = git::resolve_commit(&upstream, &names.new_k8s)?;
    let old_fork_commit = git::resolve_commit(&fork, &names.old_fork_tag)?;
    let k3s_commit = git::resolve_commit(&k3s, &names.release_branch).map_err(|_| {
        ReleaseError::MissingBranch {
            branch: names.release_branch.clone(),
        }
    })?;
    let patches_text = git_text(
        &fork,
        &[
            "rev-list",
            "--reverse",
            &format!("{old_commit}..{old_fork_commit}~1"),
        ],
    )?;
    let patches = patches_text.lines().map(str::to_owned).collect();
    let source_date_epoch = git_text(&upstream, &["log", "-1", "--format=%ct", &new_commit])?
        .parse()
        .map_err(|_| ReleaseError::NoGoVersion {
            tag: names.new_k8s.clone(),
        })?;
    let existing_new_tag = facts
        .fork_tags
        .contains(&names.new_fork_tag)
        .then(|| git::resolve_commit(&fork, &names.new_fork_tag))
        .transpose()?;
    let mut modules = Vec::new();
    for module in &repos.modules {
        let mirror = git::mirror(git_dir, &module.repo)?;
        let mut tags = BTreeMap::new();
        for tag in git::list_tags(&loc(&mirror))? {
            let commit = git::resolve_commit(&mirror, &tag)?;
            tags.insert(tag, commit);
        }
        modules.push(ServedModule {
            path: module.path.clone(),
            mirror,
            tags,
        });
    }
    Ok(Resolved {
        old_go: go_at(&names.old_k8s)?,
        names,
        upstream,
        fork,
        k3s,
        old_commit,
        new_commit,
        old_fork_commit,
        k3s_commit,
        patches,
        source_date_epoch,
        existing_new_tag,
        modules,
    })
}

/// The default commit identity: kiln's, never the host's git configuration.
#[must_use]
pub fn default_identity() -> Identity {
    Identity {
        name: "K3s Release Captain".into(),
        email: "captain@kiln-demo.invalid".into(),
    }
}
