//! Writing repositories with `git fast-import`: every commit and tag with pinned identities and
//! dates, so their ids are the same on every machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

use super::DemoError;

/// What kind of tree entry a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular,
    Executable,
    /// A symbolic link; the content is its target.
    Symlink,
}

/// A file in a tree: kind and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct File {
    pub(crate) kind: Kind,
    pub(crate) content: Vec<u8>,
}

impl File {
    pub(crate) fn text(content: impl Into<String>) -> Self {
        Self {
            kind: Kind::Regular,
            content: content.into().into_bytes(),
        }
    }

    pub(crate) fn script(content: impl Into<String>) -> Self {
        Self {
            kind: Kind::Executable,
            content: content.into().into_bytes(),
        }
    }

    /// A symbolic link to `target` (as kubernetes' `vendor/k8s.io/*` point into staging).
    pub(crate) fn symlink(target: impl Into<String>) -> Self {
        Self {
            kind: Kind::Symlink,
            content: target.into().into_bytes(),
        }
    }
}

/// A whole tree: path → file.
pub(crate) type Tree = BTreeMap<String, File>;

/// Who made a commit or tag, and when (seconds since the epoch, UTC).
#[derive(Clone, Debug)]
pub(crate) struct Signature {
    pub(crate) name: &'static str,
    pub(crate) email: &'static str,
    pub(crate) time: i64,
}

impl Signature {
    fn line(&self) -> String {
        format!("{} <{}> {} +0000", self.name, self.email, self.time)
    }
}

/// Builds one fast-import stream.
#[derive(Default)]
pub(crate) struct Stream {
    out: Vec<u8>,
    next_mark: u32,
}

/// A commit in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark(u32);

impl Stream {
    fn data(&mut self, bytes: &[u8]) {
        let _ = writeln!(self.out, "data {}", bytes.len());
        self.out.extend_from_slice(bytes);
        self.out.push(b'\n');
    }

    /// A commit on `branch` whose tree is exactly `tree`. With the parent's tree given, only
    /// the differences are written (fast for large trees); the result is the same.
    pub(crate) fn commit(
        &mut self,
        branch: &str,
        parent: Option<(Mark, &Tree)>,
        who: &Signature,
        message: &str,
        tree: &Tree,
    ) -> Mark {
        let mark = self.header(&format!("refs/heads/{branch}"), who, message);
        let previous = match parent {
            Some((parent, previous)) => {
                let _ = writeln!(self.out, "from :{}", parent.0);
                for path in previous.keys().filter(|p| !tree.contains_key(*p)) {
                    let _ = writeln!(self.out, "D {path}");
                }
                Some(previous)
            }
            None => None,
        };
        for (path, file) in tree {
            if previous.and_then(|p| p.get(path)) == Some(file) {
                continue;
            }
            self.file(path, file);
        }
        self.out.push(b'\n');
        mark
    }

    /// A commit's header on `reference`: its mark, author and committer, message.
    fn header(&mut self, reference: &str, who: &Signature, message: &str) -> Mark {
        self.next_mark += 1;
        let mark = Mark(self.next_mark);
        let mut header = String::new();
        let _ = writeln!(header, "commit {reference}");
        let _ = writeln!(header, "mark :{}", mark.0);
        let _ = writeln!(header, "author {}", who.line());
        let _ = writeln!(header, "committer {}", who.line());
        self.out.extend_from_slice(header.as_bytes());
        self.data(message.as_bytes());
        mark
    }

    /// One file of a commit, inline.
    fn file(&mut self, path: &str, file: &File) {
        let mode = match file.kind {
            Kind::Regular => "100644",
            Kind::Executable => "100755",
            Kind::Symlink => "120000",
        };
        let _ = writeln!(self.out, "M {mode} inline {path}");
        self.data(&file.content);
    }

    /// A commit on `reference` (`refs/heads/…`, `refs/pull/…`) on top of `parent` that writes
    /// `changes` into the parent's tree (no parent: a tree of only `changes`). Cheap at any
    /// tree size: nothing but the changed files is written.
    pub(crate) fn change(
        &mut self,
        reference: &str,
        parent: Option<Mark>,
        who: &Signature,
        message: &str,
        changes: &[(String, File)],
    ) -> Mark {
        let mark = self.header(reference, who, message);
        if let Some(parent) = parent {
            let _ = writeln!(self.out, "from :{}", parent.0);
        }
        for (path, file) in changes {
            self.file(path, file);
        }
        self.out.push(b'\n');
        mark
    }

    /// An annotated tag `name` on `target`.
    pub(crate) fn annotated_tag(
        &mut self,
        name: &str,
        target: Mark,
        who: &Signature,
        message: &str,
    ) {
        let _ = writeln!(self.out, "tag {name}");
        let _ = writeln!(self.out, "from :{}", target.0);
        let _ = writeln!(self.out, "tagger {}", who.line());
        // `data` ends with the one optional LF fast-import allows here.
        self.data(message.as_bytes());
    }

    /// Points `reference` (e.g. `refs/heads/main`) at `target`.
    pub(crate) fn reset(&mut self, reference: &str, target: Mark) {
        let _ = writeln!(self.out, "reset {reference}");
        let _ = writeln!(self.out, "from :{}\n", target.0);
    }

    /// Feeds the stream to `git fast-import` in the bare repository `repo` (created if
    /// missing) and returns the commit id of every mark.
    pub(crate) fn import(self, repo: &Path) -> Result<BTreeMap<u32, String>, DemoError> {
        if !repo.join("HEAD").is_file() {
            let parent = repo.parent().unwrap_or(Path::new("."));
            super::git(
                parent,
                [
                    std::ffi::OsStr::new("init"),
                    "--quiet".as_ref(),
                    "--bare".as_ref(),
                    repo.as_os_str(),
                ],
            )?;
        }
        let marks_file = tempfile::NamedTempFile::new().map_err(|source| DemoError::Io {
            action: "create a marks file for",
            path: repo.to_owned(),
            source,
        })?;
        let mut child = super::git_command(repo)
            .args(["fast-import", "--quiet", "--done"])
            .arg(format!("--export-marks={}", marks_file.path().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DemoError::Io {
                action: "run git fast-import in",
                path: repo.to_owned(),
                source,
            })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stream = self.out;
        stream.extend_from_slice(b"done\n");
        let written = stdin.write_all(&stream);
        drop(stdin);
        let output = child.wait_with_output().map_err(|source| DemoError::Io {
            action: "run git fast-import in",
            path: repo.to_owned(),
            source,
        })?;
        if !output.status.success() || written.is_err() {
            return Err(DemoError::Git {
                args: "fast-import".into(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        let marks = std::fs::read_to_string(marks_file.path()).map_err(|source| DemoError::Io {
            action: "read the marks of",
            path: repo.to_owned(),
            source,
        })?;
        Ok(marks
            .lines()
            .filter_map(|line| {
                let (mark, id) = line.split_once(' ')?;
                Some((mark.strip_prefix(':')?.parse().ok()?, id.to_owned()))
            })
            .collect())
    }
}
