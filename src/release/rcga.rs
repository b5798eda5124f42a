//! RC and GA tags of k3s: `vX.Y.Z-rcN+k3sM` (N = highest existing + 1) and `vX.Y.Z+k3sM`
//! (only after at least one RC), on the head of the release branch. Tags are created, never
//! moved: an existing tag elsewhere is refused.

use std::path::Path;

use crate::git::{self, GitError, Location};
use crate::names::{ForkTag, K3sVersion, next_rc, rcs_among};

/// RC or GA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagKind {
    /// A release candidate.
    Rc,
    /// The release.
    Ga,
}

/// What `kiln tag` will do, or did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TagPlan {
    /// The tag.
    pub(crate) tag: K3sVersion,
    /// The branch whose head it names.
    pub(crate) branch: String,
    /// That head.
    pub(crate) commit: String,
    /// True when the tag already exists at that commit (nothing to do).
    pub(crate) exists: bool,
    /// The RC tags of this version and suffix already in the repository.
    pub(crate) rcs: Vec<String>,
}

/// Why a tag cannot be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum TagError {
    /// GA before any RC.
    #[error("{} needs a release candidate first: no {}-rcN+{} tag exists", .tag.ga(), .tag.k8s, .tag.suffix)]
    #[diagnostic(
        code(kiln::tag::no_rc),
        help("cut one with `kiln tag rc {} --suffix {}` and let it pass QA", .tag.k8s, .tag.suffix)
    )]
    NoRc {
        /// The release's fork tag.
        tag: ForkTag,
    },
    /// The tag exists at another commit.
    #[error("{tag} already exists at {existing}, not at the head of {branch} ({head})")]
    #[diagnostic(
        code(kiln::tag::exists),
        help(
            "kiln never moves a tag; if the head is what should ship, cut a new RC or a new -k3sN"
        )
    )]
    Exists {
        /// The tag.
        tag: String,
        /// Where it is.
        existing: String,
        /// The branch.
        branch: String,
        /// Its head.
        head: String,
    },
    /// The head already carries an RC of this version.
    #[error("the head of {branch} ({head}) is already {rc}")]
    #[diagnostic(
        code(kiln::tag::same_head),
        help("a new RC needs new commits on {branch}")
    )]
    HeadHasRc {
        /// The branch.
        branch: String,
        /// Its head.
        head: String,
        /// The RC it carries.
        rc: String,
    },
    /// The release branch does not exist.
    #[error("{repo} has no branch {branch}")]
    #[diagnostic(code(kiln::tag::no_branch), help("pass the branch with --branch"))]
    NoBranch {
        /// The repository.
        repo: String,
        /// The branch.
        branch: String,
    },
    /// git failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Git(#[from] GitError),
}

/// Plans the RC or GA tag of the release `fork_tag` names on `branch` of the local
/// repository `repo`.
pub(crate) fn plan_tag(
    repo: &Path,
    kind: TagKind,
    fork_tag: ForkTag,
    branch: &str,
) -> Result<TagPlan, TagError> {
    git::validate_rev(branch)?;
    let location = Location::parse(&repo.to_string_lossy())?;
    let tags = git::list_tags(&location)?;
    let head = git::resolve_commit(repo, &format!("refs/heads/{branch}")).map_err(|_| {
        TagError::NoBranch {
            repo: location.to_string(),
            branch: branch.to_owned(),
        }
    })?;
    let rcs: Vec<String> = rcs_among(fork_tag, tags.iter().map(String::as_str))
        .into_iter()
        .map(|(_, name)| name.to_owned())
        .collect();
    let tag = match kind {
        TagKind::Rc => {
            for rc in &rcs {
                if git::resolve_commit(repo, rc)? == head {
                    return Err(TagError::HeadHasRc {
                        branch: branch.to_owned(),
                        head,
                        rc: rc.clone(),
                    });
                }
            }
            fork_tag.rc(next_rc(fork_tag, tags.iter().map(String::as_str)))
        }
        TagKind::Ga => {
            if rcs.is_empty() {
                return Err(TagError::NoRc { tag: fork_tag });
            }
            fork_tag.ga()
        }
    };
    let name = tag.to_string();
    git::validate_rev(&name)?;
    let exists = if tags.contains(&name) {
        let existing = git::resolve_commit(repo, &name)?;
        if existing != head {
            return Err(TagError::Exists {
                tag: name,
                existing,
                branch: branch.to_owned(),
                head,
            });
        }
        true
    } else {
        false
    };
    Ok(TagPlan {
        tag,
        branch: branch.to_owned(),
        commit: head,
        exists,
        rcs,
    })
}

/// Creates the planned tag (a lightweight tag; `update-ref` with the all-zero old value, so an
/// existing ref is never overwritten, even by a race).
pub(crate) fn create_tag(repo: &Path, plan: &TagPlan) -> Result<(), TagError> {
    if plan.exists {
        return Ok(());
    }
    git::output(
        repo,
        &[
            "update-ref",
            "--end-of-options",
            &format!("refs/tags/{}", plan.tag),
            &plan.commit,
            "0000000000000000000000000000000000000000",
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcs_are_found_by_number_for_their_version_and_suffix() {
        let tag: ForkTag = "v1.28.2-k3s1".parse().unwrap();
        let tags: Vec<String> = [
            "v1.28.2-rc10+k3s1",
            "v1.28.2-rc2+k3s1",
            "v1.28.2-rc1+k3s2",
            "v1.28.3-rc1+k3s1",
            "v1.28.2+k3s1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            rcs_among(tag, tags.iter().map(String::as_str)),
            [(2, "v1.28.2-rc2+k3s1"), (10, "v1.28.2-rc10+k3s1")]
        );
        assert_eq!(next_rc(tag, tags.iter().map(String::as_str)), 11);
    }
}
