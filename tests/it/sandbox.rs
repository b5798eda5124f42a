//! The hermetic step contract, against a real Docker engine.

use crate::common::TimedOutput as _;
use std::os::unix::fs::MetadataExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::TryStreamExt as _;
use kiln::sandbox::{
    BindMount, CacheMount, LogStream, Sandbox as _, SandboxError, StepEvent, UserId, run_to_end,
};

use crate::common::{self, docker_or_skip, text};

/// Runs a shell script as a step and returns its stdout lines.
async fn sh(docker: &common::Docker, script: &str) -> Vec<String> {
    let (step, _) = docker.step("sh", &["/bin/sh", "-c", script]);
    run_to_end(&docker.sandbox, step, |_| {})
        .await
        .expect("step succeeds")
        .stdout
}

#[tokio::test]
async fn host_environment_does_not_reach_the_step() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    // The canary lives in the environment of the kiln process that runs the step.
    let canary = format!("canary-{}", uuid::Uuid::new_v4().simple());
    let output = common::kiln()
        .env("KILN_CANARY_TOKEN", &canary)
        .env("SSH_AUTH_SOCK", "/tmp/agent.sock")
        .args([
            "sandbox",
            "run",
            "--image",
            &docker.image,
            "--env",
            "DECLARED=yes",
            "--",
        ])
        .args([
            "/bin/sh",
            "-c",
            "tr '\\0' '\\n' < /proc/1/environ; echo umask=$(umask)",
        ])
        .timed_output()
        .expect("kiln runs");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stdout.contains(&canary), "canary leaked:\n{stdout}");
    assert!(
        !stdout.contains("KILN_CANARY_TOKEN"),
        "canary name leaked:\n{stdout}"
    );
    assert!(!stdout.contains("SSH_AUTH_SOCK"), "agent leaked:\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "DECLARED=yes",
        "TZ=UTC",
        "LC_ALL=C",
        "HOME=/home/kiln",
        "umask=0022",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected} in:\n{stdout}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("PWD=")),
        "shell-made PWD leaked:\n{stdout}"
    );
}

#[tokio::test]
async fn date_reports_source_date_epoch() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (step, _) = docker.step(
        "clock",
        &["/bin/sh", "-c", "date -u +%s; date -u -d @5 +%s; date -u"],
    );
    let step = step.env("SOURCE_DATE_EPOCH", "1700000000");
    let out = run_to_end(&docker.sandbox, step, |_| {})
        .await
        .unwrap()
        .stdout;
    assert_eq!(out[0], "1700000000");
    // An explicit date passes through the shim untouched.
    assert_eq!(out[1], "5");
    assert_eq!(out[2], "Tue Nov 14 22:13:20 UTC 2023");
}

#[tokio::test]
async fn network_is_none() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let out = sh(
        &docker,
        "ls /sys/class/net; \
         if timeout 5 bash -c 'exec 3<>/dev/tcp/192.0.2.1/80'; then echo connected; else echo refused; fi; \
         if timeout 5 bash -c 'exec 3<>/dev/tcp/10.0.2.2/22'; then echo connected; else echo refused; fi",
    )
    .await;
    assert_eq!(out, vec!["lo", "refused", "refused"]);
}

#[tokio::test]
async fn files_in_a_bind_mount_belong_to_the_worktree_owner() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let is_root = rustix::process::geteuid().is_root();
    if is_root {
        // As root, hand the worktree to someone else so "not root" is observable.
        std::os::unix::fs::chown(dir.path(), Some(1234), Some(2345)).unwrap();
    }
    let owner = UserId::owner_of(dir.path()).unwrap();
    let (mut step, _) = docker.step(
        "owner",
        &["/bin/sh", "-c", "mkdir sub && echo hi > sub/file && id -u"],
    );
    step.user = Some(owner);
    step.workdir = "/work".into();
    step.mounts.push(BindMount {
        source: dir.path().into(),
        target: "/work".into(),
        read_only: false,
    });
    let out = run_to_end(&docker.sandbox, step, |_| {})
        .await
        .unwrap()
        .stdout;
    assert_eq!(out, vec![owner.uid.to_string()]);
    for path in [dir.path().join("sub"), dir.path().join("sub/file")] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner.uid, owner.gid),
            "{}",
            path.display()
        );
        if is_root {
            assert_ne!(meta.uid(), 0);
        }
    }
    // The file mode shows umask 022.
    let mode = std::fs::metadata(dir.path().join("sub/file"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
}

#[tokio::test]
async fn read_only_mounts_cannot_be_written() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut step, _) = docker.step("ro", &["/bin/sh", "-c", "touch /in/x"]);
    step.mounts.push(BindMount {
        source: dir.path().into(),
        target: "/in".into(),
        read_only: true,
    });
    let err = run_to_end(&docker.sandbox, step, |_| {}).await.unwrap_err();
    assert!(matches!(err, SandboxError::StepFailed { .. }), "{err:?}");
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn cache_volume_persists_between_steps() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let name = format!("test-{}", uuid::Uuid::new_v4().simple());
    // A path the toolchain image prepares (1777), so a fresh volume there is writable by any uid.
    let cache = CacheMount {
        name: name.clone(),
        target: "/cache/gomod".into(),
    };
    let (mut write, _) = docker.step(
        "cache-write",
        &["/bin/sh", "-c", "echo kept > /cache/gomod/v"],
    );
    write.caches.push(cache.clone());
    write.user = Some(UserId {
        uid: 1000,
        gid: 1000,
    });
    run_to_end(&docker.sandbox, write, |_| {}).await.unwrap();
    let (mut read, _) = docker.step("cache-read", &["/bin/sh", "-c", "cat /cache/gomod/v"]);
    read.caches.push(cache.clone());
    read.user = Some(UserId {
        uid: 1000,
        gid: 1000,
    });
    let out = run_to_end(&docker.sandbox, read, |_| {})
        .await
        .unwrap()
        .stdout;
    assert_eq!(out, vec!["kept"]);
    docker
        .sandbox
        .engine()
        .docker()
        .remove_volume(
            &cache.volume_name(UserId::BUILD),
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn output_streams_as_ordered_line_events() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (step, _) = docker.step(
        "lines",
        &["/bin/sh", "-c", "echo one; echo two >&2; printf three"],
    );
    let events: Vec<StepEvent> = docker.sandbox.run(step).try_collect().await.unwrap();
    assert!(matches!(events.first(), Some(StepEvent::Started { .. })));
    let logs: Vec<(LogStream, &str)> = events
        .iter()
        .filter_map(|e| match e {
            StepEvent::Log { stream, line } => Some((*stream, line.as_str())),
            _ => None,
        })
        .collect();
    let stdout: Vec<&str> = logs
        .iter()
        .filter(|(s, _)| *s == LogStream::Stdout)
        .map(|(_, l)| *l)
        .collect();
    let stderr: Vec<&str> = logs
        .iter()
        .filter(|(s, _)| *s == LogStream::Stderr)
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(stdout, vec!["one", "three"]);
    assert_eq!(stderr, vec!["two"]);
    assert!(matches!(events.last(), Some(StepEvent::Finished(exit)) if exit.is_success()));
}

#[tokio::test]
async fn failing_step_reports_its_exit_code_and_stderr_tail() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (step, test_id) = docker.step(
        "fail",
        &[
            "/bin/sh",
            "-c",
            "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
        ],
    );
    let err = run_to_end(&docker.sandbox, step, |_| {}).await.unwrap_err();
    match &err {
        SandboxError::StepFailed {
            step,
            code,
            stderr_tail,
        } => {
            assert_eq!((step.as_str(), *code), ("fail", 3));
            assert_eq!(stderr_tail.len(), kiln::sandbox::STDERR_TAIL_LINES);
            assert_eq!(stderr_tail.last().map(String::as_str), Some("line30"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("exit code 3"), "{err}");
    assert!(
        docker.containers_of(&test_id).await.is_empty(),
        "failed step's container remains"
    );
}

#[tokio::test]
async fn oom_killed_step_is_reported_as_such() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (mut step, test_id) = docker.step(
        "oom",
        &["/bin/sh", "-c", "head -c 400m /dev/zero | tail > /dev/null"],
    );
    step.memory_limit = Some(32 * 1024 * 1024);
    let err = run_to_end(&docker.sandbox, step, |_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            SandboxError::OomKilled {
                memory_limit: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("OOM-killed"), "{err}");
    assert!(docker.containers_of(&test_id).await.is_empty());
}

#[tokio::test]
async fn missing_image_is_a_clear_error() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (mut step, _) = docker.step("noimage", &["true"]);
    step.image = "kiln/does-not-exist:nope".into();
    let err = run_to_end(&docker.sandbox, step, |_| {}).await.unwrap_err();
    assert!(matches!(err, SandboxError::ImageMissing { .. }), "{err:?}");
}

/// Waits until a container labelled `test_id` is running.
async fn wait_running(docker: &common::Docker, test_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(id) = docker.containers_of(test_id).await.into_iter().next() {
            let state = docker
                .sandbox
                .engine()
                .docker()
                .inspect_container(&id, None)
                .await;
            if state.ok().and_then(|s| s.state).and_then(|s| s.running) == Some(true) {
                return id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "container for {test_id} never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dropping_a_running_step_removes_its_container() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (step, test_id) = docker.step("cancel", &["sleep", "300"]);
    let mut events = docker.sandbox.run(step);
    let first = events.try_next().await.unwrap();
    assert!(matches!(first, Some(StepEvent::Started { .. })));
    wait_running(&docker, &test_id).await;
    drop(events);
    assert!(
        docker.containers_of(&test_id).await.is_empty(),
        "container survived cancellation"
    );
}

#[tokio::test]
async fn a_panic_while_a_step_runs_removes_its_container() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let (step, test_id) = docker.step("panic", &["sleep", "300"]);
    let sandbox = docker.sandbox.clone();
    let joined = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut events = sandbox.run(step);
            let _ = events.try_next().await.unwrap();
            panic!("simulated bug while the step runs");
        });
    })
    .join();
    assert!(joined.is_err(), "the thread panicked");
    assert!(
        docker.containers_of(&test_id).await.is_empty(),
        "container survived the panic"
    );
}

#[tokio::test]
async fn kill_9_leaves_an_orphan_that_the_next_kiln_start_removes() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let orphan_id = uuid::Uuid::new_v4().simple().to_string();
    let live_id = uuid::Uuid::new_v4().simple().to_string();
    let spawn_sleeper = |test_id: &str| {
        common::kiln()
            .args(["sandbox", "run", "--image", &docker.image, "--label"])
            .arg(format!("kiln.test-id={test_id}"))
            .args(["--", "sleep", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln starts")
    };
    let mut doomed = spawn_sleeper(&orphan_id);
    let mut live = spawn_sleeper(&live_id);
    let orphan = wait_running(&docker, &orphan_id).await;
    let live_container = wait_running(&docker, &live_id).await;

    // SIGKILL: no destructor runs, so the container outlives its kiln.
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // Any kiln start reaps: here a trivial step.
    let output = common::kiln()
        .args(["sandbox", "run", "--image", &docker.image, "--", "true"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let gone = docker
        .sandbox
        .engine()
        .docker()
        .inspect_container(&orphan, None)
        .await;
    assert!(gone.is_err(), "orphan {orphan} was not reaped");
    // The concurrent, live run's container was not touched.
    let still = docker
        .sandbox
        .engine()
        .docker()
        .inspect_container(&live_container, None)
        .await;
    assert_eq!(still.unwrap().state.and_then(|s| s.running), Some(true));

    live.kill().unwrap();
    live.wait().unwrap();
    docker.sandbox.reap_orphans().await.unwrap();
    assert!(docker.containers_of(&live_id).await.is_empty());
}

#[tokio::test]
async fn sandbox_run_passes_the_exit_code_through() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let output = common::kiln()
        .args([
            "sandbox",
            "run",
            "--image",
            &docker.image,
            "--",
            "/bin/sh",
            "-c",
            "exit 7",
        ])
        .timed_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
}

#[tokio::test]
async fn doctor_reports_a_hermetic_sandbox() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let output = common::kiln()
        .args(["doctor", "--json"])
        .timed_output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "doctor failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["engine"]["api_version"]
            .as_str()
            .map(|v| v >= "1.41"),
        Some(true)
    );
    let kind = if common::podman_pass() {
        "podman"
    } else {
        "docker"
    };
    assert_eq!(report["engine"]["kind"], kind, "{stdout}");
    assert_eq!(report["host"]["rootless"], false, "{stdout}");
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "network",
            "user",
            "capabilities",
            "rootfs",
            "pids",
            "rlimits",
            "engine socket",
            "env",
            "clock",
            "umask",
            "timezone",
            "hostname"
        ]
    );
    assert!(checks.iter().all(|c| c["ok"] == true), "{stdout}");
}
