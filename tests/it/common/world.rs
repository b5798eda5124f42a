//! The demo world for end-to-end tests.

use std::path::{Path, PathBuf};

use super::{kiln, text};

/// A demo world in a temp dir, with its own store.
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = kiln()
            .args(["demo", "init"])
            .arg(dir.path().join("w"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output).1);
        Self { dir }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("w")
    }

    pub(crate) fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub(crate) fn kiln(&self, args: &[&str]) -> std::process::Output {
        kiln()
            .current_dir(self.path())
            .arg("--store")
            .arg(self.store())
            .args(args)
            .output()
            .unwrap()
    }

    pub(crate) fn release(&self, new: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["release", "--old", "v1.28.1", "--new", new, "--json"];
        args.extend_from_slice(extra);
        let output = self.kiln(&args);
        assert!(
            output.status.success(),
            "release failed:\n{}",
            text(&output).1
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub(crate) fn blob(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.store()
            .join(format!("store-v1/blobs/sha256/{}/{hex}", &hex[..2]))
    }

    /// Every ref of the three user repositories: kiln must never change them.
    pub(crate) fn refs(&self) -> String {
        ["upstream.git", "fork.git", "k3s.git"]
            .iter()
            .map(|r| git(&self.path().join(r), &["for-each-ref"]))
            .collect()
    }

    pub(crate) fn records(&self) -> usize {
        std::fs::read_dir(self.store().join("store-v1/records")).map_or(0, Iterator::count)
    }
}

/// Runs git in `dir` and returns its stdout; panics on failure.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
