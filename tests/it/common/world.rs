//! The demo world for end-to-end tests.

use super::TimedOutput as _;
use std::path::{Path, PathBuf};

use std::collections::HashMap;

use futures::TryStreamExt as _;

use super::{HttpFiles, kiln, text};

/// A demo world in a temp dir, with its own store and its own stand-in module proxy (serving
/// its `goproxy/` on loopback, named in its kiln.toml, stopped when the world is dropped).
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    root: PathBuf,
    /// Kept only to stop it with the world (`None`: a world without third-party modules).
    _proxy: Option<HttpFiles>,
    /// The download stand-in serving the world's `downloads/` (what k3s's scripts/download
    /// asks for), named in its kiln.toml as `[release] download-mirror`.
    pub(crate) downloads: Option<HttpFiles>,
}

impl World {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        Self::init(&root);
        Self::serving(dir, root)
    }

    /// The world at `root` with its stand-in proxy started and named in its kiln.toml.
    fn serving(dir: tempfile::TempDir, root: PathBuf) -> Self {
        let proxy = HttpFiles::start(Some(&root.join("goproxy")));
        let config = root.join("kiln.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(text.contains("\n[go]\n"), "{text}");
        let text = text.replacen(
            "\n[go]\n",
            &format!("\n[go]\nproxy = \"{}\"\n", proxy.url),
            1,
        );
        let downloads = HttpFiles::start(Some(&root.join("downloads")));
        assert!(text.contains("\n[release]\n"), "{text}");
        let text = text.replacen(
            "\n[release]\n",
            &format!("\n[release]\ndownload-mirror = \"{}\"\n", downloads.url),
            1,
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            root,
            _proxy: Some(proxy),
            downloads: Some(downloads),
        }
    }

    /// A world made by `kiln demo init ARGS`, served as [`World::new`]'s.
    pub(crate) fn with_demo_args(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("w");
        Self::init_with(&root, args);
        Self::serving(dir, root)
    }

    /// A world inside another git work tree, as `./demo-world` lies inside a kiln checkout:
    /// `<tmp>/outer` is the work tree, the world is `<tmp>/outer/checkout/demo-world`. Its
    /// commands name every repository by flag from a subdirectory, where kiln reads no
    /// kiln.toml (nor its `[go]` table): it has no third-party modules, so needs no proxy.
    pub(crate) fn nested() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join("outer");
        std::fs::create_dir_all(outer.join("checkout")).unwrap();
        git(&outer, &["init", "--quiet", "-b", "main"]);
        std::fs::write(outer.join("checkout/README.md"), "a checkout\n").unwrap();
        git(&outer, &["add", "checkout/README.md"]);
        git(
            &outer,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "--quiet",
                "-m",
                "checkout",
            ],
        );
        let root = outer.join("checkout/demo-world");
        Self::init_with(&root, &["--no-third-party"]);
        let downloads = HttpFiles::start(Some(&root.join("downloads")));
        Self {
            dir,
            root,
            _proxy: None,
            downloads: Some(downloads),
        }
    }

    fn init(root: &Path) {
        Self::init_with(root, &[]);
    }

    fn init_with(root: &Path, extra: &[&str]) {
        let output = kiln()
            .args(["demo", "init"])
            .args(extra)
            .arg(root)
            .timed_output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output).1);
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.root.clone()
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
            .timed_output()
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

    /// A clone of the world's `repo` at `name` beside it: bare, as a stand-in remote, or a
    /// work tree to edit.
    pub(crate) fn clone_repo(&self, repo: &str, name: &str, bare: bool) -> PathBuf {
        let path = self.root.parent().unwrap().join(name);
        let from = self.path().join(repo);
        let mut args = vec!["clone", "--quiet"];
        if bare {
            args.push("--bare");
        }
        args.extend([from.to_str().unwrap(), path.to_str().unwrap()]);
        git(self.root.parent().unwrap(), &args);
        path
    }

    /// A clone of the world's k3s at `name` beside it, with the k3s branch of the release
    /// `lock` (v1.28.2-k3s1) fetched from the store's `k3s.bundle`.
    pub(crate) fn k3s_with_release_branch(&self, lock: &serde_json::Value, name: &str) -> PathBuf {
        let k3s = self.dir.path().join(name);
        git(
            self.dir.path(),
            &[
                "clone",
                "--quiet",
                self.path().join("k3s.git").to_str().unwrap(),
                k3s.to_str().unwrap(),
            ],
        );
        let bundle = self.blob(
            lock["steps"]["k3s-tidy"]["outputs"]["k3s.bundle"]
                .as_str()
                .unwrap(),
        );
        let branch = lock["k3s"]["branch"].as_str().unwrap();
        git(
            &k3s,
            &[
                "fetch",
                "--quiet",
                bundle.to_str().unwrap(),
                &format!("refs/heads/{branch}:refs/heads/{branch}"),
            ],
        );
        k3s
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
        .timed_output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The engine's clock format for event filters: now, in seconds since the epoch.
pub(crate) fn now_text() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

/// Runs `command` and returns its output and the labels of every container that process
/// created: kiln's containers carry `kiln.owner` with its pid, so parallel tests' containers
/// never count.
pub(crate) async fn containers_created_by(
    docker: &super::Docker,
    command: std::process::Command,
) -> (std::process::Output, Vec<HashMap<String, String>>) {
    created_on(docker.sandbox.engine().docker(), command).await
}

/// [`containers_created_by`] on the engine `client` speaks to.
pub(crate) async fn created_on(
    client: &bollard::Docker,
    mut command: std::process::Command,
) -> (std::process::Output, Vec<HashMap<String, String>>) {
    // Followed live from before the command starts: the engine keeps only its last 256 events
    // for a later `since` query, which a long run among parallel tests outlives.
    let filters = HashMap::from([("type", vec!["container"]), ("event", vec!["create"])]);
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(&now_text())
        .filters(&filters)
        .build();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stream = client.events(Some(options));
    let collecting = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = futures::StreamExt::next(&mut stream).await {
                seen.lock().unwrap().push(event);
            }
        })
    };
    // The subscription is live once the engine answers; give it that moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    collecting.abort();
    let events = std::mem::take(&mut *seen.lock().unwrap());
    let created = events
        .into_iter()
        .filter_map(|e| e.actor?.attributes)
        .filter(|labels| {
            labels
                .get(kiln::sandbox::LABEL_OWNER)
                .is_some_and(|owner| owner.contains(&format!(";p={pid};")))
        })
        .collect();
    (output, created)
}

/// The labels of every container the kiln processes `pids` created between `since` and
/// `until` (as [`now_text`] gives them), each with the pid that created it.
pub(crate) async fn created_between(
    docker: &super::Docker,
    since: &str,
    until: &str,
    pids: &[u32],
) -> Vec<(u32, HashMap<String, String>)> {
    let filters = HashMap::from([("type", vec!["container"]), ("event", vec!["create"])]);
    let options = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(since)
        .until(until)
        .filters(&filters)
        .build();
    let events: Vec<_> = docker
        .sandbox
        .engine()
        .docker()
        .events(Some(options))
        .try_collect()
        .await
        .unwrap();
    events
        .into_iter()
        .filter_map(|e| e.actor?.attributes)
        .filter_map(|labels| {
            let owner = labels.get(kiln::sandbox::LABEL_OWNER)?;
            let pid = pids
                .iter()
                .find(|pid| owner.contains(&format!(";p={pid};")))?;
            Some((*pid, labels))
        })
        .collect()
}

/// Runs `kiln ARGS` in the world and counts the step containers that process created.
pub(crate) async fn kiln_counting_containers(
    docker: &super::Docker,
    world: &World,
    args: &[&str],
) -> (std::process::Output, usize) {
    let mut command = kiln();
    command
        .current_dir(world.path())
        .arg("--store")
        .arg(world.store())
        .args(args);
    let (output, created) = containers_created_by(docker, command).await;
    (output, created.len())
}
