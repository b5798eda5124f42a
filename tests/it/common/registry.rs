//! A private Debian `docker-registry` on a free loopback port, with its own config and storage
//! directory, stopped by its pid when dropped.

use super::TimedOutput as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running registry.
pub(crate) struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
}

impl Registry {
    /// Starts one, or returns `None` (skipping) when `docker-registry` is not installed and
    /// `KILN_TEST_DOCKER` is unset; under it, a missing registry fails the test.
    pub(crate) fn start() -> Option<Self> {
        if Command::new("docker-registry")
            .arg("--version")
            .timed_output()
            .is_err()
        {
            super::skip("docker-registry is not installed (scripts/test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Self {
            child: None,
            addr: String::new(),
            dir,
        };
        // A free port is only free until someone takes it: another port if it was taken.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            registry.addr = format!("127.0.0.1:{port}");
            if registry.spawn() {
                return Some(registry);
            }
        }
        panic!("docker-registry did not start on five free ports");
    }

    /// Starts it on `addr`; false when it did not come up (the port was taken).
    fn spawn(&mut self) -> bool {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {}\n  secret: kiln-test\n",
                self.data().display(),
                self.addr
            ),
        )
        .unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            // Ours, not whatever else took the port: the registry's own API answers.
            if is_registry(&self.addr) && child.try_wait().unwrap().is_none() {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Its storage root.
    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every file of its storage with its length: what a write would change.
    pub(crate) fn storage(&self) -> Vec<(PathBuf, u64)> {
        let mut found = Vec::new();
        let mut stack = vec![self.data()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    found.push((entry.path(), meta.len()));
                }
            }
        }
        found.sort();
        found
    }

    /// `oci://ADDR/REPO`.
    pub(crate) fn url(&self, repo: &str) -> String {
        format!("oci://{}/{repo}", self.addr)
    }

    /// The stored file of blob `digest` (`sha256:…`).
    pub(crate) fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.data()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The directory of tag `tag` in `repo`.
    pub(crate) fn tag_dir(&self, repo: &str, tag: &str) -> PathBuf {
        self.data()
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests/tags")
            .join(tag)
    }

    /// Stops it (by pid).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The manifest digest tag `tag` points at.
    pub(crate) fn tag_target(&self, repo: &str, tag: &str) -> String {
        std::fs::read_to_string(self.tag_dir(repo, tag).join("current/link"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Stores `bytes` as a blob and a manifest revision of `repo`, and points `tag` at it.
    pub(crate) fn put_manifest(&self, repo: &str, tag: &str, bytes: &[u8]) {
        let digest = kiln::hash::Digest::of(bytes).to_string();
        let file = self.blob_file(&digest);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, bytes).unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let repo_dir = self
            .data()
            .join("docker/registry/v2/repositories")
            .join(repo);
        let revision = repo_dir.join("_manifests/revisions/sha256").join(hex);
        std::fs::create_dir_all(&revision).unwrap();
        std::fs::write(revision.join("link"), &digest).unwrap();
        let tag_dir = self.tag_dir(repo, tag);
        let index = tag_dir.join("index/sha256").join(hex);
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("link"), &digest).unwrap();
        std::fs::create_dir_all(tag_dir.join("current")).unwrap();
        std::fs::write(tag_dir.join("current/link"), &digest).unwrap();
    }

    /// Copies everything under `from` into `to` (for replaying a tag under another name).
    pub(crate) fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.path().is_dir() {
                Self::copy_dir(&entry.path(), &dest);
            } else {
                std::fs::copy(entry.path(), dest).unwrap();
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a registry (API v2) answers at `addr`.
fn is_registry(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version: registry/2.0")
}
