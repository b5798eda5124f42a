//! Which files of a tagged tree belong to a module, by Go's zip rules.

use std::collections::{BTreeMap, HashSet};

use std::path::Path;
use std::process::Command;

use super::{GitReadError, GoModError};

/// Largest module (uncompressed) Go accepts.
const MAX_ZIP: u64 = 500 << 20;
/// Largest go.mod and LICENSE Go accepts.
const MAX_SPECIAL: u64 = 16 << 20;

/// A module's files, by path relative to the module root, in byte order.
pub(crate) type ModuleFiles = BTreeMap<String, Vec<u8>>;

/// Go's `isVendoredPackage`, offset quirk included: changing it would change every published
/// checksum, so Go kept it and so does kiln.
fn is_vendored(name: &str) -> bool {
    let start = if name.starts_with("vendor/") {
        "vendor/".len()
    } else if name.contains("/vendor/") {
        "/vendor/".len()
    } else {
        return false;
    };
    name.get(start..).is_some_and(|rest| rest.contains('/'))
}

/// Go's rules for a file path element.
fn element_ok(element: &str) -> bool {
    if element.is_empty() || element == "." || element == ".." || element.ends_with('.') {
        return false;
    }
    element.chars().all(|c| {
        c.is_alphanumeric()
            || (c.is_ascii() && "-._~+!#$%&()=@[]^{},; ".contains(c) && c != ' ')
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
    })
}

fn path_ok(path: &str) -> bool {
    !path.starts_with('/') && !path.contains('\\') && path.split('/').all(element_ok)
}

/// The files of the module rooted at `subdir` (`""` for the repository root) of `rev` in the
/// repository `repo`, filtered by Go's zip rules.
pub(crate) fn module_files(
    repo: &Path,
    rev: &str,
    subdir: &str,
    module: &str,
    version: &str,
) -> Result<ModuleFiles, GoModError> {
    let git_error = |what: &str, source: GitReadError| GoModError::Git {
        what: what.to_owned(),
        repo: repo.display().to_string(),
        rev: rev.to_owned(),
        source,
    };
    crate::git::validate_rev(rev).map_err(|e| git_error("the tree", e.into()))?;
    let invalid = |reason: String| GoModError::Invalid {
        module: module.to_owned(),
        version: version.to_owned(),
        reason,
    };
    let prefix = if subdir.is_empty() {
        String::new()
    } else {
        format!("{}/", subdir.trim_end_matches('/'))
    };
    let mut list = Command::new("git");
    list.arg("-C")
        .arg(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    list.args([
        "ls-tree",
        "-r",
        "-z",
        "--full-tree",
        "--end-of-options",
        &format!("{rev}^{{tree}}"),
    ]);
    if !prefix.is_empty() {
        list.arg("--").arg(&prefix);
    }
    let output = list
        .output()
        .map_err(|e| git_error("the tree", GitReadError::Spawn(e)))?;
    if !output.status.success() {
        return Err(git_error(
            "the tree",
            GitReadError::Failed(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
        ));
    }
    // (relative path, blob id) of regular files; symlinks and submodules are left out.
    let mut entries: Vec<(String, String)> = Vec::new();
    for record in output.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let record = String::from_utf8_lossy(record);
        let Some((meta, path)) = record.split_once('\t') else {
            continue;
        };
        let fields: Vec<&str> = meta.split(' ').collect();
        let [mode, kind, oid] = fields.as_slice() else {
            continue;
        };
        let Some(relative) = path.strip_prefix(&prefix) else {
            continue;
        };
        if *kind == "blob" && (*mode == "100644" || *mode == "100755") {
            entries.push((relative.to_owned(), (*oid).to_owned()));
        }
    }
    // Directories (other than the root) holding a go.mod are other modules.
    let nested: HashSet<String> = entries
        .iter()
        .filter_map(|(p, _)| {
            let (dir, base) = p.rsplit_once('/')?;
            base.eq_ignore_ascii_case("go.mod")
                .then(|| format!("{dir}/"))
        })
        .collect();
    let in_nested = |p: &str| {
        let mut at = p;
        while let Some((dir, _)) = at.rsplit_once('/') {
            if nested.contains(&format!("{dir}/")) {
                return true;
            }
            at = dir;
        }
        false
    };
    entries.retain(|(p, _)| !is_vendored(p) && !in_nested(p) && p != ".hg_archival.txt");
    let mut folded = HashSet::new();
    for (p, _) in &entries {
        if !path_ok(p) {
            return Err(invalid(format!("file path `{p}` is not valid in a module")));
        }
        if p.eq_ignore_ascii_case("go.mod") && p != "go.mod" {
            return Err(invalid(format!("`{p}` must be spelled go.mod")));
        }
        if !folded.insert(p.to_lowercase()) {
            return Err(invalid(format!(
                "`{p}` collides with another file under case folding"
            )));
        }
    }
    let contents = read_blobs(repo, entries.iter().map(|(_, oid)| oid.as_str()))
        .map_err(|e| git_error("file contents", e))?;
    let mut files = ModuleFiles::new();
    let mut total: u64 = 0;
    for ((path, _), content) in entries.into_iter().zip(contents) {
        let size = content.len() as u64;
        total += size;
        if (path == "go.mod" || path == "LICENSE") && size > MAX_SPECIAL {
            return Err(invalid(format!("{path} is larger than 16 MiB")));
        }
        files.insert(path, content);
    }
    if total > MAX_ZIP {
        return Err(invalid(format!(
            "its files add up to {total} bytes, more than Go's 500 MiB"
        )));
    }
    if !files.contains_key("go.mod") {
        return Err(invalid(format!(
            "there is no go.mod in {}",
            if subdir.is_empty() {
                "the root"
            } else {
                subdir
            }
        )));
    }
    Ok(files)
}

/// Reads blobs with one `git cat-file --batch`.
fn read_blobs<'a>(
    repo: &Path,
    oids: impl Iterator<Item = &'a str>,
) -> Result<Vec<Vec<u8>>, GitReadError> {
    let oids: Vec<String> = oids.map(str::to_owned).collect();
    crate::git::read_objects(repo, &oids)
        .map_err(|e| GitReadError::Failed(e.to_string()))?
        .into_iter()
        .zip(&oids)
        .map(|(blob, oid)| blob.ok_or_else(|| GitReadError::Protocol(format!("{oid} is missing"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_files_follow_gos_quirk() {
        assert!(is_vendored("vendor/x/y"));
        assert!(!is_vendored("vendor/modules.txt"));
        // The historic offset: "pkg/vendor/vendor.go"[8..] = "or/vendor.go" contains '/'.
        assert!(is_vendored("pkg/vendor/vendor.go"));
        assert!(!is_vendored("a/vendor.go"));
    }

    #[test]
    fn file_paths_follow_gos_rules() {
        for ok in ["go.mod", "a/b.go", "LICENSE", "a+b/c~d.txt", "x/@v/y"] {
            assert!(path_ok(ok), "{ok}");
        }
        for bad in [
            "a/../b", "/abs", "a//b", "a'b", "a:b", "a\\b", "a.", "a b", "a\"b", "a*b", "a<b",
        ] {
            assert!(!path_ok(bad), "{bad}");
        }
    }
}
