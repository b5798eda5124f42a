//! kiln on Podman. The test command runs this module, the sandbox contract (`sandbox::`) and
//! the demo release end to end (`release_e2e::`) a second time with `DOCKER_HOST` at a private
//! Podman service (`KILN_TEST_PODMAN=1`, scripts/lib/podman.sh); in the Docker pass this
//! module has nothing to do.

use crate::common::TimedOutput as _;
use crate::common::{self, World, docker_or_skip, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// The first lines where two texts differ, for a failure message.
fn line_diff(a: &str, b: &str) -> String {
    a.lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(8)
        .map(|(n, (x, y))| format!("line {}:\n  docker: {x}\n  podman: {y}", n + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_demo_release_on_podman_is_docker_s_byte_for_byte_and_caches_without_a_container() {
    // The Docker pass has no Podman; the Podman pass runs this (KILN_TEST_PODMAN=1).
    if !common::podman_pass() {
        return;
    }
    let Some(podman) = docker_or_skip().await else {
        return;
    };
    let docker_host = std::env::var("KILN_TEST_DOCKER_HOST")
        .expect("the Podman pass names the Docker engine in KILN_TEST_DOCKER_HOST");

    // The same release on Docker, from its own world and store.
    let on_docker = World::new();
    let output = common::kiln()
        .env("DOCKER_HOST", &docker_host)
        .current_dir(on_docker.path())
        .arg("--store")
        .arg(on_docker.store())
        .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "on Docker:\n{}", text(&output).1);
    let docker_lock = std::fs::read_to_string(on_docker.path().join(LOCK)).unwrap();

    // On Podman: every container step runs there, and the lockfile is the same bytes.
    let on_podman = World::new();
    let release = ["release", "--old", "v1.28.1", "--new", "v1.28.2"];
    let (output, created) = common::kiln_counting_containers(&podman, &on_podman, &release).await;
    assert!(output.status.success(), "on Podman:\n{}", text(&output).1);
    assert_eq!(
        created,
        6,
        "rebase, tag, modules-fetch, k3s-tidy, k3s-download and build run in Podman's \
         containers:\n{}",
        text(&output).1
    );
    let podman_lock = std::fs::read_to_string(on_podman.path().join(LOCK)).unwrap();
    assert!(
        docker_lock == podman_lock,
        "the lockfiles made on Docker and on Podman differ:\n{}",
        line_diff(&docker_lock, &podman_lock)
    );

    // Again on Podman: every step cached, no container started, the same lockfile.
    let (output, created) = common::kiln_counting_containers(&podman, &on_podman, &release).await;
    assert!(output.status.success(), "{}", text(&output).1);
    let cached = text(&output)
        .0
        .lines()
        .filter(|l| l.contains(" cached "))
        .count();
    assert_eq!(cached, 8, "{}", text(&output).0);
    assert_eq!(
        created, 0,
        "a fully cached release on Podman started a container"
    );
    assert_eq!(
        std::fs::read_to_string(on_podman.path().join(LOCK)).unwrap(),
        podman_lock
    );
}
