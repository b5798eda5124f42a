//! The Go modules a release serves: the fork's root and staging modules at a fork tag, and
//! the extra modules k3s requires, read from their git tags.

use std::path::Path;

use crate::gomod::{GitReadError, GoModError, ModuleVersion, module_files};

/// The fork's module path.
pub(crate) const FORK_MODULE: &str = "github.com/k3s-io/kubernetes";

fn git_out(repo: &Path, args: &[&str]) -> Result<String, GoModError> {
    crate::git::output(repo, args).map_err(|e| GoModError::Git {
        what: args.join(" "),
        repo: repo.display().to_string(),
        rev: String::new(),
        source: e.into(),
    })
}

/// The commit time (seconds since the epoch) of `rev`.
fn commit_time(repo: &Path, rev: &str) -> Result<i64, GoModError> {
    let text = git_out(
        repo,
        &["log", "-1", "--format=%ct", "--end-of-options", rev],
    )?;
    text.parse().map_err(|_| GoModError::Git {
        what: "the commit time".into(),
        repo: repo.display().to_string(),
        rev: rev.to_owned(),
        source: GitReadError::Protocol(format!("`{text}` is not a time")),
    })
}

/// The staging modules of the tree at `rev`: the directories under `staging/src/k8s.io/`.
pub(crate) fn staging_modules(repo: &Path, rev: &str) -> Result<Vec<String>, GoModError> {
    crate::git::validate_rev(rev).map_err(|e| GoModError::Git {
        what: "staging".into(),
        repo: repo.display().to_string(),
        rev: rev.to_owned(),
        source: e.into(),
    })?;
    let listing = git_out(
        repo,
        &[
            "ls-tree",
            "--name-only",
            "-d",
            "--end-of-options",
            &format!("{rev}:staging/src/k8s.io"),
        ],
    )?;
    Ok(listing.lines().map(str::to_owned).collect())
}

/// The fork's modules at `fork_tag`: `github.com/k3s-io/kubernetes` from the tag's root and
/// `github.com/k3s-io/kubernetes/staging/src/k8s.io/<m>` from `staging/src/k8s.io/<m>/<tag>`.
pub fn fork_module_versions(repo: &Path, fork_tag: &str) -> Result<Vec<ModuleVersion>, GoModError> {
    let time = commit_time(repo, fork_tag)?;
    let mut versions = vec![ModuleVersion {
        module: FORK_MODULE.to_owned(),
        version: fork_tag.to_owned(),
        time,
        files: module_files(repo, fork_tag, "", FORK_MODULE, fork_tag)?,
    }];
    for module in staging_modules(repo, fork_tag)? {
        let tag = format!("staging/src/k8s.io/{module}/{fork_tag}");
        let path = format!("{FORK_MODULE}/staging/src/k8s.io/{module}");
        versions.push(ModuleVersion {
            files: module_files(
                repo,
                &tag,
                &format!("staging/src/k8s.io/{module}"),
                &path,
                fork_tag,
            )?,
            module: path,
            version: fork_tag.to_owned(),
            time: commit_time(repo, &tag)?,
        });
    }
    Ok(versions)
}

/// Every tagged version of an extra module in `repo` (module at the repository root): `tags`
/// pairs each version with the revision it is read at (a step's input holds the commits, not
/// necessarily their tags).
pub fn extra_module_versions(
    repo: &Path,
    module: &str,
    tags: &[(String, String)],
) -> Result<Vec<ModuleVersion>, GoModError> {
    tags.iter()
        .filter(|(t, _)| t.starts_with('v') && t.contains('.'))
        .map(|(tag, rev)| {
            Ok(ModuleVersion {
                module: module.to_owned(),
                version: tag.clone(),
                time: commit_time(repo, rev)?,
                files: module_files(repo, rev, "", module, tag)?,
            })
        })
        .collect()
}
