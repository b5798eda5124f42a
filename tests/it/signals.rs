//! Ctrl-C, SIGTERM and SIGHUP while a step runs (RELIABILITY.md row 15): the step's container
//! is stopped and removed, its lock released, and kiln exits 130 / 143 / 129 — also when it was
//! only waiting for another run's lock.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{
    Workspace, containers_of_pid, docker_or_skip, send, spawn_run, unique, wait_for_container,
    wait_within,
};

/// One step that sleeps, so a signal can be sent while it runs.
pub(crate) fn sleeper(id: &str) -> String {
    format!(
        r#"
[[step]]
name = "sleep-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "sleep 120; echo late > late.txt"]
outputs = ["late.txt"]
"#
    )
}

/// The step lock of the plan's only step can be taken without waiting.
pub(crate) fn step_lock_is_free(ws: &Workspace) -> bool {
    let locks = ws.store().join("store-v1/locks");
    std::fs::read_dir(&locks).unwrap().flatten().all(|entry| {
        let name = entry.file_name();
        if name == "store.lock" {
            return true;
        }
        let file = std::fs::File::open(entry.path()).unwrap();
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
    })
}

#[tokio::test]
async fn a_signal_stops_and_removes_the_step_and_exits_with_its_code() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    for (signal, code) in [
        (rustix::process::Signal::INT, 130),
        (rustix::process::Signal::TERM, 143),
        (rustix::process::Signal::HUP, 129),
    ] {
        let ws = Workspace::new();
        ws.write_plan(&sleeper(&unique()));
        let mut child = spawn_run(ws.kiln());
        let container = wait_for_container(docker.sandbox.engine().docker(), &child).await;
        let sent = Instant::now();
        send(&child, signal);
        let status = wait_within(&mut child, Duration::from_secs(60));
        let stderr = crate::common::stderr_of(&mut child);
        assert_eq!(
            status.code(),
            Some(code),
            "{signal:?}: {status:?}: {stderr}"
        );
        assert!(
            containers_of_pid(docker.sandbox.engine().docker(), child.id())
                .await
                .is_empty(),
            "{signal:?}: container {container} was left behind: {stderr} {:?}",
            docker
                .sandbox
                .engine()
                .docker()
                .inspect_container(&container, None)
                .await
                .map(|c| c.state)
        );
        assert!(
            step_lock_is_free(&ws),
            "{signal:?}: a step lock is still held"
        );
        // Stopped, not waited out: the step would have slept two minutes.
        assert!(sent.elapsed() < Duration::from_secs(60), "{signal:?}");
        assert_eq!(
            std::fs::read_dir(ws.store().join("store-v1/records"))
                .unwrap()
                .count(),
            0,
            "{signal:?}: a record of the stopped step was written"
        );
    }
}

#[tokio::test]
async fn a_run_waiting_for_another_runs_lock_stops_at_once() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let ws = Workspace::new();
    ws.write_plan(&sleeper(&unique()));
    let spawn = || {
        ws.kiln()
            .args(["run", "--file", "plan.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = spawn();
    wait_for_container(docker.sandbox.engine().docker(), &first).await;
    // The second run of the same step waits for the first one's lock (and starts nothing).
    let mut second = spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second run did not wait for the lock"
    );
    assert!(
        containers_of_pid(docker.sandbox.engine().docker(), second.id())
            .await
            .is_empty()
    );
    send(&second, rustix::process::Signal::INT);
    let status = wait_within(&mut second, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "{status:?}");
    // The first run was not disturbed; then it stops too.
    assert!(first.try_wait().unwrap().is_none());
    send(&first, rustix::process::Signal::INT);
    let status = wait_within(&mut first, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(status.signal().is_none());
    assert!(step_lock_is_free(&ws));
}
