//! k3s's go.mod and Go version, edited as data: every line keeps its layout, only version
//! tokens change, and only where the rules of DESIGN.md §1 say so. The runbook's global sed
//! also rewrote unrelated modules (and turned v0.28.10 into v0.28.20); this does not.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::names::ForkTag;

use super::ReleaseError;

/// The fork's module path; replace targets under it are the fork's tags.
const FORK_MODULE: &str = "github.com/k3s-io/kubernetes";

/// What a go.mod edit changes, every version spelled once from the two fork tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GoModEdit {
    /// `v1.28.1` → `v1.28.2` for `require k8s.io/kubernetes`.
    old_k8s: String,
    new_k8s: String,
    /// `v0.28.1` → `v0.28.2` for `k8s.io/*` requires pinned exactly at the old client.
    old_client: String,
    new_client: String,
    /// `v1.28.1-k3s1` → `v1.28.2-k3s1` for replace targets under the fork.
    old_fork_tag: String,
    new_fork_tag: String,
}

impl GoModEdit {
    /// The edit of a release from `old` to `new`.
    #[must_use]
    pub(crate) fn new(old: ForkTag, new: ForkTag) -> Self {
        Self {
            old_k8s: old.k8s.to_string(),
            new_k8s: new.k8s.to_string(),
            old_client: old.k8s.client().to_string(),
            new_client: new.k8s.client().to_string(),
            old_fork_tag: old.to_string(),
            new_fork_tag: new.to_string(),
        }
    }

    /// Every version of the edit by name, as the `k3s-edit` step's key reads them.
    #[must_use]
    pub(crate) fn as_inputs(&self) -> [(&'static str, String); 6] {
        [
            ("old_k8s", self.old_k8s.clone()),
            ("new_k8s", self.new_k8s.clone()),
            ("old_client", self.old_client.clone()),
            ("new_client", self.new_client.clone()),
            ("old_fork_tag", self.old_fork_tag.clone()),
            ("new_fork_tag", self.new_fork_tag.clone()),
        ]
    }
}

/// One changed line.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LineChange {
    /// The file, relative to the k3s checkout.
    pub(crate) file: String,
    /// 1-based line number.
    pub(crate) line: usize,
    /// Before.
    pub(crate) old: String,
    /// After.
    pub(crate) new: String,
}

impl fmt::Display for LineChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}\n  - {}\n  + {}",
            self.file,
            self.line,
            self.old.trim(),
            self.new.trim()
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    None,
    Require,
    Replace,
    Other,
}

/// A token of a line with its byte range.
fn tokens(line: &str) -> Vec<(usize, &str)> {
    let code = line.find("//").map_or(line, |at| &line[..at]);
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push((s, &code[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, &code[s..]));
    }
    out
}

fn replace_token(line: &str, at: usize, old: &str, new: &str) -> String {
    format!("{}{}{}", &line[..at], new, &line[at + old.len()..])
}

/// Edits go.mod text; returns the new text and every changed line. Fails when the file does
/// not look like k3s's at the old release (nothing to change), so a wrong `--old` is caught.
pub(crate) fn edit_go_mod(
    text: &str,
    edit: &GoModEdit,
    file: &str,
) -> Result<(String, Vec<LineChange>), ReleaseError> {
    let mut block = Block::None;
    let mut out = String::with_capacity(text.len() + 64);
    let mut changes = Vec::new();
    let mut saw_kubernetes_require = false;
    let mut saw_fork_replace = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let toks = tokens(line);
        let words: Vec<&str> = toks.iter().map(|(_, t)| *t).collect();
        // Which directive this line belongs to, and its tokens after the keyword.
        let (kind, body): (Block, &[(usize, &str)]) = match (block, words.as_slice()) {
            (Block::None, ["require", "("]) => {
                block = Block::Require;
                (Block::None, &[])
            }
            (Block::None, ["replace", "("]) => {
                block = Block::Replace;
                (Block::None, &[])
            }
            (Block::None, [_, "("]) => {
                block = Block::Other;
                (Block::None, &[])
            }
            (Block::None, ["require", ..]) => (Block::Require, &toks[1..]),
            (Block::None, ["replace", ..]) => (Block::Replace, &toks[1..]),
            (_, [")"]) => {
                block = Block::None;
                (Block::None, &[])
            }
            (Block::Require | Block::Replace, _) => (block, &toks[..]),
            _ => (Block::None, &[]),
        };
        let mut new_line = line.to_owned();
        match kind {
            Block::Require => {
                if let [(_, module), (at, version), ..] = body {
                    let target = if *module == "k8s.io/kubernetes" && *version == edit.old_k8s {
                        saw_kubernetes_require = true;
                        Some(&edit.new_k8s)
                    } else if module.starts_with("k8s.io/") && *version == edit.old_client {
                        Some(&edit.new_client)
                    } else {
                        None
                    };
                    if let Some(target) = target {
                        new_line = replace_token(line, *at, version, target);
                    }
                }
            }
            Block::Replace => {
                let arrow = body.iter().position(|(_, t)| *t == "=>");
                if let Some(arrow) = arrow
                    && let [(_, to), (at, version)] = &body[arrow + 1..]
                {
                    let under_fork = *to == FORK_MODULE
                        || to
                            .strip_prefix(FORK_MODULE)
                            .is_some_and(|rest| rest.starts_with("/staging/src/k8s.io/"));
                    if under_fork && *version == edit.old_fork_tag {
                        saw_fork_replace = true;
                        new_line = replace_token(line, *at, version, &edit.new_fork_tag);
                    }
                }
            }
            Block::None | Block::Other => {}
        }
        if new_line != line {
            changes.push(LineChange {
                file: file.to_owned(),
                line: index + 1,
                old: line.trim_end_matches('\n').to_owned(),
                new: new_line.trim_end_matches('\n').to_owned(),
            });
        }
        out.push_str(&new_line);
    }
    if !saw_kubernetes_require {
        return Err(ReleaseError::GoMod {
            path: file.to_owned(),
            line: 0,
            reason: format!(
                "no `require k8s.io/kubernetes {}`: is --old right?",
                edit.old_k8s
            ),
        });
    }
    if !saw_fork_replace {
        return Err(ReleaseError::GoMod {
            path: file.to_owned(),
            line: 0,
            reason: format!(
                "no replace to {FORK_MODULE}[/staging/src/k8s.io/*] {}: is the old fork tag right?",
                edit.old_fork_tag
            ),
        });
    }
    Ok((out, changes))
}

/// New file contents to write, and the lines that change.
pub(crate) type GoBump = (Vec<(PathBuf, String)>, Vec<LineChange>);

/// Rewrites the Go version in k3s's build files: `golang:X-` in `Dockerfile*` at the root and
/// `go-version:` in the integration and unit-coverage workflows. Returns the new contents of
/// the files that change and the changed lines.
pub(crate) fn bump_go_files(root: &Path, go: &str) -> Result<GoBump, ReleaseError> {
    let read_error = |path: &Path, source| ReleaseError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| read_error(root, e))?;
    let mut dockerfiles: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("Dockerfile"))
        })
        .collect();
    dockerfiles.sort();
    let workflows: Vec<PathBuf> = ["integration", "unitcoverage"]
        .iter()
        .map(|w| root.join(format!(".github/workflows/{w}.yaml")))
        .filter(|p| p.is_file())
        .collect();
    let mut changes = Vec::new();
    for (path, is_workflow) in dockerfiles
        .iter()
        .map(|p| (p, false))
        .chain(workflows.iter().map(|p| (p, true)))
    {
        let text = std::fs::read_to_string(path).map_err(|e| read_error(path, e))?;
        let name = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let mut out = String::with_capacity(text.len());
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let new_line = if is_workflow {
                bump_workflow_line(line, go)
            } else {
                bump_dockerfile_line(line, go)
            };
            if new_line != line {
                changes.push(LineChange {
                    file: name.clone(),
                    line: index + 1,
                    old: line.trim_end_matches('\n').to_owned(),
                    new: new_line.trim_end_matches('\n').to_owned(),
                });
            }
            out.push_str(&new_line);
        }
        if out != text {
            files.push((path.clone(), out));
        }
    }
    Ok((files, changes))
}

fn is_go_version(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `golang:1.22.12-alpine3.18` → `golang:<go>-alpine3.18`, wherever it appears on the line.
fn bump_dockerfile_line(line: &str, go: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("golang:") {
        let (before, after) = rest.split_at(at + "golang:".len());
        out.push_str(before);
        match after.find('-') {
            Some(dash) if is_go_version(&after[..dash]) => {
                out.push_str(go);
                rest = &after[dash..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// `go-version: '1.22.12'` → `go-version: '<go>'`, keeping the quoting.
fn bump_workflow_line(line: &str, go: &str) -> String {
    let Some(at) = line.find("go-version:") else {
        return line.to_owned();
    };
    let (head, value) = line.split_at(at + "go-version:".len());
    let trimmed = value.trim();
    let (quote, bare) = match trimmed.chars().next() {
        Some(q @ ('\'' | '"')) => (Some(q), trimmed.trim_matches(q)),
        _ => (None, trimmed),
    };
    if !is_go_version(bare) {
        return line.to_owned();
    }
    let space = &value[..value.len() - value.trim_start().len()];
    let newline = if line.ends_with('\n') { "\n" } else { "" };
    match quote {
        Some(q) => format!("{head}{space}{q}{go}{q}{newline}"),
        None => format!("{head}{space}{go}{newline}"),
    }
}

/// What `kiln bump-k3s` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct BumpReport {
    /// Changed lines, go.mod first.
    pub(crate) changes: Vec<LineChange>,
}

/// The go.mod and Go-version edits of a release, in place on the k3s checkout at `root` (no
/// tidy, no container). Nothing is written unless every edit succeeds; each file is replaced
/// atomically.
pub(crate) fn bump_k3s(
    root: &Path,
    edit: &GoModEdit,
    go: Option<&str>,
) -> Result<BumpReport, ReleaseError> {
    let go_mod = root.join("go.mod");
    let text = std::fs::read_to_string(&go_mod).map_err(ReleaseError::io("read", &go_mod))?;
    let (new_text, mut changes) = edit_go_mod(&text, edit, "go.mod")?;
    let mut writes = vec![(go_mod, new_text)];
    if let Some(go) = go {
        let (files, go_changes) = bump_go_files(root, go)?;
        writes.extend(files);
        changes.extend(go_changes);
    }
    for (path, content) in writes {
        crate::durable::write(&path, content.as_bytes(), crate::durable::Placement::Beside)?;
    }
    Ok(BumpReport { changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit() -> GoModEdit {
        GoModEdit::new(
            "v1.28.1-k3s1".parse().unwrap(),
            "v1.28.2-k3s1".parse().unwrap(),
        )
    }

    const GO_MOD: &str = "module github.com/k3s-io/k3s\n\ngo 1.20\n\nreplace (\n\
\tgithub.com/k3s-io/kubernetes-stale => github.com/k3s-io/kubernetes-stale v0.27.4\n\
\tk8s.io/api => github.com/k3s-io/kubernetes/staging/src/k8s.io/api v1.28.1-k3s1 // keep me\n\
\tk8s.io/kubernetes   =>   github.com/k3s-io/kubernetes v1.28.1-k3s1\n\
\tk8s.io/legacy => github.com/k3s-io/kubernetes/staging/src/k8s.io/legacy v1.27.4-k3s1\n\
\tk8s.io/local => ./local\n)\n\n\
replace k8s.io/cri-api => github.com/k3s-io/kubernetes/staging/src/k8s.io/cri-api v1.28.1-k3s1\n\n\
require (\n\
\tgithub.com/k3s-io/helper v0.28.1\n\
\tk8s.io/api v0.28.1\n\
\tk8s.io/client-go v0.28.10 // indirect\n\
\tk8s.io/klog/v2 v0.28.1\n\
\tk8s.io/kubernetes v1.28.1\n\
\tsigs.k8s.io/yaml v0.28.1\n)\n\nrequire k8s.io/cri-api v0.28.1\n";

    #[test]
    fn edits_exactly_the_release_lines_and_keeps_layout() {
        let (out, changes) = edit_go_mod(GO_MOD, &edit(), "go.mod").unwrap();
        let lines: Vec<usize> = changes.iter().map(|c| c.line).collect();
        assert_eq!(lines, vec![7, 8, 13, 17, 19, 20, 24]);
        assert!(out.contains("\tk8s.io/api => github.com/k3s-io/kubernetes/staging/src/k8s.io/api v1.28.2-k3s1 // keep me\n"));
        assert!(
            out.contains("\tk8s.io/kubernetes   =>   github.com/k3s-io/kubernetes v1.28.2-k3s1\n"),
            "spacing kept"
        );
        assert!(out.contains("replace k8s.io/cri-api => github.com/k3s-io/kubernetes/staging/src/k8s.io/cri-api v1.28.2-k3s1\n"));
        assert!(
            out.contains("\tgithub.com/k3s-io/helper v0.28.1\n"),
            "unrelated module untouched"
        );
        assert!(
            out.contains("\tsigs.k8s.io/yaml v0.28.1\n"),
            "not k8s.io/*: untouched"
        );
        assert!(
            out.contains("\tk8s.io/client-go v0.28.10 // indirect\n"),
            "v0.28.10 is not v0.28.1"
        );
        assert!(out.contains("\tk8s.io/klog/v2 v0.28.2\n"));
        assert!(out.contains("\tk8s.io/kubernetes v1.28.2\n"));
        assert!(
            out.contains("k8s.io/legacy v1.27.4-k3s1"),
            "stale replace at another tag untouched"
        );
        assert!(out.contains("stale v0.27.4"));
        assert!(
            out.contains("require k8s.io/cri-api v0.28.2\n"),
            "single-line require"
        );
        // Only version tokens changed: same number of lines, same length deltas.
        assert_eq!(out.lines().count(), GO_MOD.lines().count());
    }

    #[test]
    fn a_wrong_old_version_is_caught() {
        let mut wrong = edit();
        wrong.old_k8s = "v1.28.0".into();
        assert!(matches!(
            edit_go_mod(GO_MOD, &wrong, "go.mod"),
            Err(ReleaseError::GoMod { .. })
        ));
        let mut wrong = edit();
        wrong.old_fork_tag = "v1.28.1-k3s2".into();
        assert!(matches!(
            edit_go_mod(GO_MOD, &wrong, "go.mod"),
            Err(ReleaseError::GoMod { .. })
        ));
    }

    #[test]
    fn go_bump_touches_only_go_versions() {
        assert_eq!(
            bump_dockerfile_line("ARG GOLANG=golang:1.22.12-alpine3.18\n", "1.23.5"),
            "ARG GOLANG=golang:1.23.5-alpine3.18\n"
        );
        assert_eq!(
            bump_dockerfile_line("FROM golang:alpine AS x\n", "1.23.5"),
            "FROM golang:alpine AS x\n"
        );
        assert_eq!(
            bump_dockerfile_line("FROM ${GOLANG}\n", "1.23.5"),
            "FROM ${GOLANG}\n"
        );
        assert_eq!(
            bump_workflow_line("          go-version: '1.22.12'\n", "1.23.5"),
            "          go-version: '1.23.5'\n"
        );
        assert_eq!(
            bump_workflow_line("  go-version: \"1.22\"\n", "1.23.5"),
            "  go-version: \"1.23.5\"\n"
        );
        assert_eq!(
            bump_workflow_line("  go-version: ${{ matrix.go }}\n", "1.23.5"),
            "  go-version: ${{ matrix.go }}\n"
        );
    }

    #[test]
    fn bump_k3s_writes_nothing_when_an_edit_fails() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("go.mod"), GO_MOD).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile.dapper"),
            "ARG GOLANG=golang:1.22.12-alpine3.18\n",
        )
        .unwrap();
        let mut wrong = edit();
        wrong.old_k8s = "v1.28.0".into();
        assert!(bump_k3s(dir.path(), &wrong, Some("1.23.5")).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("go.mod")).unwrap(),
            GO_MOD
        );
        let report = bump_k3s(dir.path(), &edit(), Some("1.23.5")).unwrap();
        assert_eq!(report.changes.len(), 8);
        assert!(
            std::fs::read_to_string(dir.path().join("Dockerfile.dapper"))
                .unwrap()
                .contains("golang:1.23.5-alpine3.18")
        );
    }
}
