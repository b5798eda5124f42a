//! A `go.mod` whose `go` directive asks for a newer Go than the release's toolchain fails
//! inside a step with Go's own error (`go.mod requires go >= 1.24.0 (running go 1.23.5;
//! GOTOOLCHAIN=local)`), after the steps before it ran. kiln reads the `go.mod` of every
//! module its steps build — upstream's root and staging modules at the new tag, k3s's root at
//! its release branch — and reports each such file before any step runs.

use std::cmp::Ordering;

use crate::git;

use super::{ReleaseError, Resolved};

/// A Go version's place in Go's order: minor, then stage (a bare language version `1.N`
/// before `1.NbetaK` before `1.NrcK` before `1.N.P`), then K or P.
fn order(version: &str) -> Option<(u32, u8, u32)> {
    let rest = version.trim().strip_prefix("go").unwrap_or(version.trim());
    let rest = rest.strip_prefix("1.")?;
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (minor, tail) = rest.split_at(split);
    let minor = minor.parse().ok()?;
    let number = |s: &str| s.parse::<u32>().ok();
    if tail.is_empty() {
        Some((minor, 0, 0))
    } else if let Some(k) = tail.strip_prefix("beta") {
        Some((minor, 1, number(k)?))
    } else if let Some(k) = tail.strip_prefix("rc") {
        Some((minor, 2, number(k)?))
    } else {
        Some((minor, 3, number(tail.strip_prefix('.')?)?))
    }
}

/// Whether a module asking for `directive` cannot be built by Go `toolchain` (unknown forms
/// are left to Go).
fn too_new(directive: &str, toolchain: &str) -> bool {
    matches!(
        (order(directive), order(toolchain)),
        (Some(d), Some(t)) if d.cmp(&t) == Ordering::Greater
    )
}

/// The `go` directive of a go.mod's text.
fn directive(go_mod: &str) -> Option<&str> {
    go_mod.lines().find_map(|line| {
        let line = line.split("//").next().unwrap_or("").trim();
        line.strip_prefix("go ").map(str::trim)
    })
}

/// Whether `path` is a go.mod of a module the release builds: the root module, and (upstream)
/// the staging modules the fork tags. Other modules of the trees (`hack/tools`, test and
/// example modules) are not built by any step and may ask for another Go.
fn is_built(path: &str) -> bool {
    path == "go.mod"
        || path
            .strip_prefix("staging/src/k8s.io/")
            .and_then(|rest| rest.strip_suffix("/go.mod"))
            .is_some_and(|module| !module.is_empty() && !module.contains('/'))
}

/// Every go.mod of `repo` at `commit` that the release builds, with its directive: the
/// staging directory's entries listed, then every go.mod read at once (a Kubernetes tree has
/// 24,000 files and 30 staging modules).
fn directives(repo: &std::path::Path, commit: &str) -> Result<Vec<(String, String)>, ReleaseError> {
    git::validate_rev(commit)?;
    let staging = git::output(
        repo,
        &[
            "ls-tree",
            "-d",
            "--name-only",
            "--end-of-options",
            commit,
            "staging/src/k8s.io/",
        ],
    )?;
    let paths: Vec<String> = std::iter::once("go.mod".to_owned())
        .chain(staging.lines().map(|dir| format!("{dir}/go.mod")))
        .filter(|path| is_built(path))
        .collect();
    let specs: Vec<String> = paths.iter().map(|p| format!("{commit}:{p}")).collect();
    let mut found = Vec::new();
    for (path, text) in paths.into_iter().zip(git::read_objects(repo, &specs)?) {
        if let Some(text) = text
            && let Some(go) = directive(&String::from_utf8_lossy(&text))
        {
            found.push((path, go.to_owned()));
        }
    }
    Ok(found)
}

/// Refuses the release, before any step, when a go.mod its steps build asks for a newer Go
/// than `toolchain_go` (the Go inside the toolchain image), naming every such file.
pub(crate) fn check_go_directives(
    resolved: &Resolved,
    toolchain_go: &str,
) -> Result<(), ReleaseError> {
    let names = &resolved.names;
    let trees = [
        (
            format!("upstream {}", names.new_k8s()),
            &resolved.upstream,
            &resolved.new_commit,
        ),
        (
            format!("k3s {}", resolved.k3s_branch),
            &resolved.k3s,
            &resolved.k3s_commit,
        ),
    ];
    let mut files = Vec::new();
    for (what, repo, commit) in trees {
        for (path, go) in directives(repo, commit)? {
            if too_new(&go, toolchain_go) {
                files.push(format!("{what}: {path} says `go {go}`"));
            }
        }
    }
    if files.is_empty() {
        Ok(())
    } else {
        Err(ReleaseError::GoDirectiveTooNew {
            toolchain: toolchain_go.to_owned(),
            go_version: names.go_version().to_string(),
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_orders_language_versions_prereleases_and_patches() {
        for (directive, toolchain, newer) in [
            ("1.20", "1.23.5", false),
            ("1.23", "1.23.5", false),
            ("1.23.0", "1.23.5", false),
            ("1.23.5", "1.23.5", false),
            ("1.23.6", "1.23.5", true),
            ("1.24.0", "1.23.5", true),
            ("1.24", "1.23.5", true),
            ("1.24", "1.24rc2", false),
            ("1.24rc1", "1.24rc2", false),
            ("1.24.0", "1.24rc2", true),
            ("1.24rc1", "1.24beta1", true),
            ("1.9", "1.23.5", false),
            ("garbage", "1.23.5", false),
        ] {
            assert_eq!(
                too_new(directive, toolchain),
                newer,
                "{directive} vs {toolchain}"
            );
        }
    }

    #[test]
    fn only_the_modules_the_release_builds_are_checked() {
        for (path, built) in [
            ("go.mod", true),
            ("staging/src/k8s.io/api/go.mod", true),
            ("staging/src/k8s.io/api/testdata/x/go.mod", false),
            ("hack/tools/go.mod", false),
            ("vendor/k8s.io/api/go.mod", false),
            ("staging/src/k8s.io//go.mod", false),
        ] {
            assert_eq!(is_built(path), built, "{path}");
        }
    }

    #[test]
    fn the_directive_is_read_past_comments_and_other_lines() {
        let text = "// go 9.9 in a comment\nmodule k8s.io/api\n\ngo 1.24.0 // with a comment\n\ntoolchain go1.24.4\n";
        assert_eq!(directive(text), Some("1.24.0"));
        assert_eq!(directive("module x\n"), None);
    }
}
