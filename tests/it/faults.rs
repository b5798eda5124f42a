//! Faults of the engine under a running step (RELIABILITY.md rows 12 and 14): the step's
//! container killed from outside, and the Docker daemon stopped mid-step. Each must end in a
//! clear error, nothing recorded, no lock held, and a rerun that succeeds.

use crate::common::TimedOutput as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::TryStreamExt as _;

use crate::common::{
    self, Workspace, containers_of_pid, docker_or_skip, spawn_run, stderr_of, text, unique,
    wait_for_container, wait_within,
};
use crate::signals::step_lock_is_free;

/// One step that sleeps a little, long enough to be hit while it runs.
fn napper(id: &str) -> String {
    sleeper(id, 6)
}

/// One step that sleeps `seconds`, then writes its output.
fn sleeper(id: &str, seconds: u32) -> String {
    format!(
        r#"
[[step]]
name = "nap-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "sleep {seconds}; echo done > out.txt"]
outputs = ["out.txt"]
"#
    )
}

fn records(ws: &Workspace) -> usize {
    std::fs::read_dir(ws.store().join("store-v1/records"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn a_step_container_killed_from_outside_is_reported_and_nothing_is_recorded() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine().docker().clone();
    let ws = Workspace::new();
    // Long enough to be killed on a busy host (on a loaded one six seconds ran out while the
    // test waited for it to start, and the container was gone); the rerun below sleeps it all.
    ws.write_plan(&sleeper(&unique(), 15));
    let mut child = spawn_run(ws.kiln());
    let container = wait_for_container(&engine, &child).await;
    // Created is not started: kill it once it runs.
    for _ in 0..600 {
        let state = engine
            .inspect_container(&container, None)
            .await
            .unwrap()
            .state
            .unwrap_or_default();
        if state.running == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine
        .kill_container(
            &container,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(60));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was killed by SIGKILL (exit code 137)"),
        "{stderr}"
    );
    assert!(containers_of_pid(&engine, child.id()).await.is_empty());
    assert_eq!(records(&ws), 0, "a record of the killed step was written");
    assert!(step_lock_is_free(&ws));
    let work: Vec<_> = std::fs::read_dir(ws.store().join("store-v1/work"))
        .unwrap()
        .collect();
    assert!(
        work.is_empty(),
        "the step's work directory was left: {work:?}"
    );
    // The rerun simply runs the step.
    let report = ws.run_json();
    assert_eq!(common::outcomes(&report)[0].1, "ran");
}

/// A dockerd of this test's own on a unix socket, seeded with the toolchain images, which the
/// test may stop and start again (same data root, so containers survive as stopped ones).
struct OwnEngine {
    child: Option<Child>,
    /// Started with `--live-restore`: containers outlive the daemon.
    live_restore: bool,
    data: tempfile::TempDir,
    exec_root: PathBuf,
}

impl OwnEngine {
    fn new() -> Self {
        let data = tempfile::Builder::new()
            .prefix("kiln-own-engine-")
            .tempdir_in("/var/tmp")
            .unwrap();
        // Socket paths under the exec root must stay short.
        let exec_root = PathBuf::from(format!("/run/kiln-oe-{}", &unique()[..8]));
        let _ = std::fs::remove_dir_all(&exec_root);
        let mut engine = Self {
            child: None,
            live_restore: false,
            data,
            exec_root,
        };
        engine.start();
        engine
    }

    /// A new engine holding the toolchain image and its base, by id and tag, as a team seeds
    /// a host.
    async fn seeded(docker: &common::Docker) -> Self {
        let own = Self::new();
        let output = common::kiln()
            .args(["image", "toolchain", "--go", "1.23", "--json"])
            .timed_output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output).1);
        let toolchain: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let id = toolchain["id"].as_str().unwrap().to_owned();
        let exported: Vec<bytes::Bytes> = docker
            .sandbox
            .engine()
            .docker()
            .export_images(&[id.as_str(), "kiln/base:bookworm-go1.23"])
            .try_collect()
            .await
            .unwrap();
        let _: Vec<_> = own
            .client()
            .await
            .import_image(
                bollard::query_parameters::ImportImageOptionsBuilder::default().build(),
                bollard::body_full(exported.concat().into()),
                None,
            )
            .try_collect()
            .await
            .unwrap();
        own
    }

    /// Sends `signal` to the daemon (STOP freezes it: it accepts connections and answers
    /// nothing; CONT thaws it).
    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(child) = &self.child {
            common::send(child, signal);
        }
    }

    fn socket(&self) -> PathBuf {
        self.exec_root.join("d.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("dockerd.log"))
            .unwrap();
        std::fs::create_dir_all(&self.exec_root).unwrap();
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.data.path().join("root"))
            .arg("--exec-root")
            .arg(self.exec_root.join("x"))
            .arg("--pidfile")
            .arg(self.data.path().join("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .args(self.live_restore.then_some("--live-restore"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed (scripts/setup)");
        self.child = Some(child);
        for _ in 0..300 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the test's dockerd did not start: {}",
            std::fs::read_to_string(self.data.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Stops the daemon as `systemctl stop docker` would (SIGTERM; live-restore off, so it
    /// stops its containers), and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
            // A frozen daemon handles nothing until it is thawed.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            if wait_for(&mut child, Duration::from_secs(60)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    async fn client(&self) -> bollard::Docker {
        bollard::Docker::connect_with_unix(
            &self.socket().to_string_lossy(),
            600,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

#[tokio::test]
async fn a_daemon_stopped_mid_step_is_reported_and_the_next_run_cleans_up() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let mut own = OwnEngine::seeded(&docker).await;
    let client = own.client().await;

    let ws = Workspace::new();
    ws.write_plan(&napper(&unique()));
    let host = own.host();
    let kiln = |ws: &Workspace| {
        let mut command = ws.kiln();
        command.env("DOCKER_HOST", &host);
        command
    };
    let mut child = spawn_run(kiln(&ws));
    wait_for_container(&client, &child).await;
    own.stop();
    let status = wait_within(&mut child, Duration::from_secs(120));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Docker daemon connection was lost"),
        "{stderr}"
    );
    assert_eq!(
        records(&ws),
        0,
        "a record of the interrupted step was written"
    );
    assert!(step_lock_is_free(&ws));

    // The daemon comes back with the step's container (stopped, labelled with the dead kiln's
    // pid); the next kiln start removes it, and the step runs to the end.
    own.start();
    let client = own.client().await;
    let old = child.id();
    let report = {
        let output = kiln(&ws)
            .args(["run", "--file", "plan.toml", "--json"])
            .timed_output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output).1);
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    assert_eq!(common::outcomes(&report)[0].1, "ran");
    assert!(
        containers_of_pid(&client, old).await.is_empty(),
        "the interrupted run's container was not reaped"
    );

    // With live-restore on, the container outlives the daemon and is still running when it
    // comes back; kiln has gone all the same, and the next run removes the live orphan.
    own.stop();
    own.live_restore = true;
    own.start();
    let client = own.client().await;
    ws.write_plan(&crate::signals::sleeper(&unique()));
    let mut child = spawn_run(kiln(&ws));
    let container = wait_for_container(&client, &child).await;
    for _ in 0..600 {
        let state = client
            .inspect_container(&container, None)
            .await
            .unwrap()
            .state;
        if state.and_then(|s| s.running) == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    own.stop();
    let status = wait_within(&mut child, Duration::from_secs(120));
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Docker daemon connection was lost"),
        "{stderr}"
    );
    assert_eq!(records(&ws), 1, "only the first part's record");
    assert!(step_lock_is_free(&ws));
    own.start();
    let client = own.client().await;
    let state = client
        .inspect_container(&container, None)
        .await
        .unwrap()
        .state;
    assert_eq!(
        state.and_then(|s| s.running),
        Some(true),
        "live-restore kept the step's container running (the window of this check)"
    );
    // Any kiln run removes it (this one finds its short step cached from the first part).
    ws.write_plan(&napper(&unique()));
    let output = kiln(&ws)
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    assert!(
        containers_of_pid(&client, child.id()).await.is_empty(),
        "the running orphan of the interrupted run was not removed"
    );
}

#[tokio::test]
async fn a_full_cache_volume_fails_the_step_with_its_stderr_and_a_rerun_succeeds() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine().docker().clone();
    let id = unique();
    let cache = format!("full-{id}");
    // The volume kiln would create for this cache, made first as a 1 MiB tmpfs: the disk of the
    // step's cache is full long before its 4 MiB are written.
    let volume = format!("kiln-cache-{}-{cache}-u1000", common::cache_namespace());
    let options = std::collections::HashMap::from([
        ("type".to_owned(), "tmpfs".to_owned()),
        ("device".to_owned(), "tmpfs".to_owned()),
        ("o".to_owned(), "size=1m,mode=1777".to_owned()),
    ]);
    engine
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(volume.clone()),
            driver_opts: Some(options),
            ..Default::default()
        })
        .await
        .unwrap();
    let ws = Workspace::new();
    ws.write_plan(&format!(
        r#"
[[step]]
name = "fill-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "head -c 4194304 /dev/zero > /cache/gomod/blob && echo filled > out.txt"]
outputs = ["out.txt"]
caches = {{ {cache} = "/cache/gomod" }}
"#
    ));
    let output = ws
        .kiln()
        .args(["run", "--file", "plan.toml"])
        .timed_output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("last lines of stderr"), "{stderr}");
    assert_eq!(records(&ws), 0, "a record of the failed step was written");
    // Space freed (the small volume goes; kiln makes its own): the rerun succeeds.
    engine
        .remove_volume(
            &volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .unwrap();
    let report = ws.run_json();
    assert_eq!(common::outcomes(&report)[0].1, "ran");
    let _ = engine
        .remove_volume(
            &volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await;
}

// The injected error exists only in builds with the `failpoints` feature (the test command's).
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_store_without_file_locks_is_a_hard_error_with_a_remedy() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    for errno in ["ENOLCK", "ENOTSUP"] {
        let ws = Workspace::new();
        ws.write_plan(&napper(&unique()));
        let mut command = ws.kiln();
        command
            .env("KILN_FAILPOINT", format!("flock={errno}"))
            .args(["run", "--file", "plan.toml"]);
        let (output, created) = common::containers_created_by(&docker, command).await;
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{errno}: {stderr}");
        assert!(
            stderr.contains("the filesystem does not support file locks"),
            "{errno}: {stderr}"
        );
        assert!(
            stderr.contains("local filesystem that supports flock"),
            "{stderr}"
        );
        // No lock-free run: nothing started, nothing recorded.
        assert!(created.is_empty(), "{errno}: a step ran without its lock");
        assert_eq!(records(&ws), 0);
    }
}

/// Row 15's second signal: the first Ctrl-C (sent to kiln's whole process group, as a terminal
/// does) starts the clean-up, which waits on an engine that answers nothing (frozen with
/// SIGSTOP); a second Ctrl-C quits at once with 130. The thawed engine still holds the step's
/// container, and the next kiln run removes it, runs the step, and leaves no temporary or
/// work directory behind.
#[tokio::test]
async fn a_second_ctrl_c_quits_at_once_while_the_clean_up_hangs() {
    use std::os::unix::process::CommandExt as _;
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let own = OwnEngine::seeded(&docker).await;
    let client = own.client().await;
    let ws = Workspace::new();
    ws.write_plan(&napper(&unique()));
    let host = own.host();
    let kiln = |ws: &Workspace| {
        let mut command = ws.kiln();
        command.env("DOCKER_HOST", &host);
        command
    };
    let mut child = {
        let mut command = kiln(&ws);
        command.process_group(0);
        spawn_run(command)
    };
    let container = wait_for_container(&client, &child).await;
    let group = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    own.signal(rustix::process::Signal::STOP);
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    // The clean-up cannot finish: kiln is still there after three seconds (the window).
    std::thread::sleep(Duration::from_secs(3));
    if let Some(status) = child.try_wait().unwrap() {
        let stderr = stderr_of(&mut child);
        panic!("kiln exited ({status}) although its engine answers nothing: {stderr}");
    }
    let again = std::time::Instant::now();
    rustix::process::kill_process_group(group, rustix::process::Signal::INT).unwrap();
    let status = wait_within(&mut child, Duration::from_secs(10));
    let quit_in = again.elapsed();
    let stderr = stderr_of(&mut child);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(quit_in < Duration::from_secs(5), "{quit_in:?}: {stderr}");
    assert!(stderr.contains("again; quitting at once"), "{stderr}");
    assert_eq!(
        records(&ws),
        0,
        "a record of the interrupted step was written"
    );
    assert!(step_lock_is_free(&ws));

    // Thawed, the engine still has the container of the dead kiln; the next run removes it.
    own.signal(rustix::process::Signal::CONT);
    let old = child.id();
    let output = kiln(&ws)
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(common::outcomes(&report)[0].1, "ran");
    assert!(
        containers_of_pid(&client, old).await.is_empty(),
        "container {container} of the interrupted run was not reaped"
    );
    for dir in ["tmp", "work"] {
        let left: Vec<_> = std::fs::read_dir(ws.store().join("store-v1").join(dir))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{dir}/ holds {left:?}");
    }
}

/// Row 16: `kill -9` of `kiln run` while its step's container runs. The kernel releases the
/// step lock with the process; the next `kiln run` takes it at once, removes the dead run's
/// container (by its owner label), its work directory and its `tmp/` leftovers, and runs the
/// step to the end.
#[tokio::test]
async fn kill_9_of_kiln_mid_step_is_cleaned_up_by_the_next_run() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine().docker().clone();
    let ws = Workspace::new();
    ws.write_plan(&napper(&unique()));
    let mut child = spawn_run(ws.kiln());
    let container = wait_for_container(&engine, &child).await;
    // What a killed process leaves in tmp/: a temporary blob nobody holds.
    let leftover = ws.store().join("store-v1/tmp/blob-leftover");
    std::fs::write(&leftover, b"half a blob").unwrap();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let dead = child.id();
    let work = |ws: &Workspace| {
        std::fs::read_dir(ws.store().join("store-v1/work"))
            .unwrap()
            .count()
    };
    assert_eq!(work(&ws), 1, "the killed run left its work directory");
    assert!(step_lock_is_free(&ws), "the kernel released the lock");

    let started = std::time::Instant::now();
    let output = ws
        .kiln()
        .args(["run", "--file", "plan.toml", "--json"])
        .timed_output()
        .unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(common::outcomes(&report)[0].1, "ran");
    // The step sleeps 6 s: the rerun did not wait out the dead run's container or lock.
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert!(
        containers_of_pid(&engine, dead).await.is_empty(),
        "container {container} of the killed run was not removed"
    );
    assert_eq!(work(&ws), 0, "work directories left");
    assert!(!leftover.exists(), "tmp/ leftovers were not reaped");
    assert_eq!(
        std::fs::read_dir(ws.store().join("store-v1/tmp"))
            .unwrap()
            .count(),
        0
    );
}

/// Row 13 through the whole engine: a `kiln run` step over its memory limit is reported as
/// OOM-killed, nothing is recorded, no container or work directory is left, and the same step
/// with room enough then runs.
#[tokio::test]
async fn an_oom_killed_step_is_reported_and_nothing_is_recorded() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine().docker().clone();
    let ws = Workspace::new();
    let id = unique();
    let plan = |memory: u64| {
        format!(
            r#"
[[step]]
name = "hungry-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "head -c 200m /dev/zero | tail > /dev/null; echo fed > out.txt"]
memory = {memory}
outputs = ["out.txt"]
"#
        )
    };
    ws.write_plan(&plan(32 << 20));
    let child = spawn_run(ws.kiln());
    let pid = child.id();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("OOM-killed"), "{stderr}");
    assert_eq!(
        records(&ws),
        0,
        "a record of the OOM-killed step was written"
    );
    assert!(containers_of_pid(&engine, pid).await.is_empty());
    assert_eq!(
        std::fs::read_dir(ws.store().join("store-v1/work"))
            .unwrap()
            .count(),
        0
    );
    ws.write_plan(&plan(1 << 30));
    let report = ws.run_json();
    assert_eq!(common::outcomes(&report)[0].1, "ran");
}

/// Row 29, the base image: a `kiln/base` tag moved to another image that copies the real
/// base's labels (what `docker tag`, a pull or an import by someone else does) is not built
/// on. `kiln run`, `kiln image toolchain` and `kiln doctor` name the tag and what it is;
/// nothing runs and nothing is recorded; each names `kiln image bootstrap` as the fix (which
/// treats such a tag as absent and imports the real base over it).
#[tokio::test]
async fn a_base_tag_moved_to_another_image_is_refused_not_built_on() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let own = OwnEngine::seeded(&docker).await;
    let client = own.client().await;
    let tag = "kiln/base:bookworm-go1.23";
    let real = client.inspect_image(tag).await.unwrap();
    let labels = real.config.and_then(|c| c.labels).unwrap_or_default();
    let rootfs = labels["kiln.rootfs"].clone();
    let go = labels["kiln.go"].clone();

    // Another image under the base's tag, claiming the base's rootfs.
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("planted"), b"not the base\n").unwrap();
    let tar = scratch.path().join("planted.tar");
    let packed = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(scratch.path())
        .arg("planted")
        .status()
        .unwrap();
    assert!(packed.success());
    let imported = Command::new("docker")
        .args(["-H", &own.host(), "import"])
        .args(["--change", &format!("LABEL kiln.rootfs={rootfs}")])
        .args(["--change", &format!("LABEL kiln.go={go}")])
        .args(["--change", "LABEL kiln.kind=base"])
        .arg(&tar)
        .arg(tag)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", text(&imported).1);

    let ws = Workspace::new();
    ws.write_plan(&napper(&unique()));
    let host = own.host();
    let kiln = |args: &[&str]| {
        let mut command = ws.kiln();
        command.env("DOCKER_HOST", &host).args(args);
        command.timed_output().unwrap()
    };
    let refused = |output: &std::process::Output| {
        let stderr = text(output).1;
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{tag} is not the base kiln bootstrapped"))
                && stderr.contains(&rootfs)
                && stderr.contains("kiln image bootstrap --go 1.23"),
            "{stderr}"
        );
    };
    refused(&kiln(&["run", "--file", "plan.toml"]));
    refused(&kiln(&["image", "toolchain", "--go", "1.23"]));
    assert_eq!(records(&ws), 0, "a step ran on the moved base");
    let doctor = kiln(&["doctor", "--json"]);
    let (stdout, stderr) = text(&doctor);
    assert!(!doctor.status.success(), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(
        report["problems"].as_array().unwrap().iter().any(|p| {
            p["problem"]
                .as_str()
                .unwrap()
                .contains("is not the base kiln bootstrapped")
                && p["fix"] == "kiln image bootstrap --go 1.23"
        }),
        "doctor did not name the moved base: {stdout}"
    );
    // The planted image is still under the tag: kiln changed nothing it was not asked to.
    let planted = client.inspect_image(tag).await.unwrap();
    assert_ne!(planted.id, real.id);
}
