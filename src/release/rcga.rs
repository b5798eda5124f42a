//! RC and GA tags of k3s: `vX.Y.Z-rcN+k3sM` (N = highest existing + 1) and `vX.Y.Z+k3sM`
//! (only after at least one RC), on the head of the release branch. Tags are created, never
//! moved: an existing tag elsewhere is refused.

use std::path::Path;

use crate::git::{self, GitError};

use super::{K8sVersion, Suffix, next_rc, rcs_among};

/// RC or GA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagKind {
    /// A release candidate.
    Rc,
    /// The release.
    Ga,
}

/// What `kiln tag` will do, or did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TagPlan {
    /// The tag.
    pub tag: String,
    /// The branch whose head it names.
    pub branch: String,
    /// That head.
    pub commit: String,
    /// True when the tag already exists at that commit (nothing to do).
    pub exists: bool,
    /// The RC tags of this version and suffix already in the repository.
    pub rcs: Vec<String>,
}

/// Why a tag cannot be made.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TagError {
    /// GA before any RC.
    #[error("{ga} needs a release candidate first: no {version}-rcN+{suffix} tag exists")]
    #[diagnostic(
        code(kiln::tag::no_rc),
        help("cut one with `kiln tag rc {version}` and let it pass QA")
    )]
    NoRc {
        /// The GA name.
        ga: String,
        /// The version.
        version: String,
        /// The suffix.
        suffix: String,
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

/// Plans the RC or GA tag of `version`+`suffix` on `branch` of the local repository `repo`.
pub fn plan_tag(
    repo: &Path,
    kind: TagKind,
    version: &K8sVersion,
    suffix: Suffix,
    branch: &str,
) -> Result<TagPlan, TagError> {
    git::validate_rev(branch)?;
    let location = repo.to_string_lossy().into_owned();
    let tags = git::list_tags(&location)?;
    let head = git::resolve_commit(repo, &format!("refs/heads/{branch}")).map_err(|_| {
        TagError::NoBranch {
            repo: location.clone(),
            branch: branch.to_owned(),
        }
    })?;
    let rcs: Vec<String> = rcs_among(version, suffix, tags.iter().map(String::as_str))
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
            format!("{version}-rc{}+{suffix}", next_rc(version, suffix, &tags))
        }
        TagKind::Ga => {
            let ga = format!("{version}+{suffix}");
            if rcs.is_empty() {
                return Err(TagError::NoRc {
                    ga,
                    version: version.to_string(),
                    suffix: suffix.to_string(),
                });
            }
            ga
        }
    };
    git::validate_rev(&tag)?;
    let exists = if tags.contains(&tag) {
        let existing = git::resolve_commit(repo, &tag)?;
        if existing != head {
            return Err(TagError::Exists {
                tag,
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
pub fn create_tag(repo: &Path, plan: &TagPlan) -> Result<(), TagError> {
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
        let v: K8sVersion = "v1.28.2".parse().unwrap();
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
            rcs_among(&v, Suffix(1), tags.iter().map(String::as_str)),
            [(2, "v1.28.2-rc2+k3s1"), (10, "v1.28.2-rc10+k3s1")]
        );
        assert_eq!(next_rc(&v, Suffix(1), &tags), 11);
    }
}
