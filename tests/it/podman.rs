//! kiln on Podman. The test command runs this module, the sandbox contract (`sandbox::`) and
//! the demo release end to end (`release_e2e::`) a second time with `DOCKER_HOST` at a private
//! Podman service (`KILN_TEST_PODMAN=1`, scripts/lib/podman.sh); in the Docker pass this
//! module has nothing to do.

use crate::common::TimedOutput as _;
use crate::common::{self, World, docker_or_skip, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// The demo release's lockfile made on Docker (`KILN_TEST_DOCKER_HOST`), from a world and
/// store of its own; made once, for every test here.
fn docker_lockfile() -> &'static str {
    static LOCKFILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LOCKFILE.get_or_init(|| {
        let docker_host = std::env::var("KILN_TEST_DOCKER_HOST")
            .expect("the Podman pass names the Docker engine in KILN_TEST_DOCKER_HOST");
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
        std::fs::read_to_string(on_docker.path().join(LOCK)).unwrap()
    })
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
    let docker_lock = docker_lockfile();

    // On Podman: every container step runs there, and the lockfile is the same bytes.
    let on_podman = World::new();
    let release = ["release", "--old", "v1.28.1", "--new", "v1.28.2"];
    let (output, created) = common::kiln_counting_containers(&podman, &on_podman, &release).await;
    assert!(output.status.success(), "on Podman:\n{}", text(&output).1);
    // rebase, tag, modules-fetch, k3s-tidy, k3s-download and build in Podman's containers;
    // modules and k3s-edit are builtins.
    common::assert_created(created, 6, 8, &output);
    let podman_lock = std::fs::read_to_string(on_podman.path().join(LOCK)).unwrap();
    assert!(
        docker_lock == podman_lock,
        "the lockfiles made on Docker (-) and on Podman (+) differ:\n{}",
        common::line_diff(docker_lock, &podman_lock)
    );

    // Again on Podman: every step cached, no container started, the same lockfile.
    let (output, created) = common::kiln_counting_containers(&podman, &on_podman, &release).await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(common::cached_steps(&output), 8, "{}", text(&output).0);
    assert_eq!(
        created, 0,
        "a fully cached release on Podman started a container"
    );
    assert_eq!(
        std::fs::read_to_string(on_podman.path().join(LOCK)).unwrap(),
        podman_lock
    );

    // kiln verify on Podman: the git steps rebuilt in a fresh store with fresh cache volumes
    // (made and removed on Podman), every output the same.
    let output = on_podman.kiln(&["verify", LOCK, "--steps", "git", "--json"]);
    assert!(
        output.status.success(),
        "verify on Podman:\n{}",
        text(&output).1
    );
}

/// The rootless Podman of the Podman pass: its user's name, uid and gid, home, runtime
/// directory and socket (`KILN_TEST_ROOTLESS_USER`, `KILN_TEST_ROOTLESS_HOST`).
struct Rootless {
    uid: u32,
    gid: u32,
    home: String,
    run: String,
    host: String,
}

impl Rootless {
    fn from_env() -> Self {
        let user = std::env::var("KILN_TEST_ROOTLESS_USER")
            .expect("the Podman pass names its rootless user in KILN_TEST_ROOTLESS_USER");
        let host = std::env::var("KILN_TEST_ROOTLESS_HOST")
            .expect("the Podman pass names its rootless engine in KILN_TEST_ROOTLESS_HOST");
        let id = |flag: &str| -> u32 {
            let out = std::process::Command::new("id")
                .args([flag, &user])
                .timed_output()
                .unwrap();
            text(&out).0.trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let home = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .and_then(|l| l.split(':').nth(5))
            .unwrap()
            .to_owned();
        Self {
            uid,
            gid,
            home,
            run: format!("/run/user/{uid}"),
            host,
        }
    }

    /// `kiln ARGS` as the rootless user (its own uid, gid and groups), in `dir`, with the
    /// binary copied where that user can run it: nothing of root's environment but the Go
    /// archives.
    fn kiln(
        &self,
        kiln: &std::path::Path,
        dir: &std::path::Path,
        args: &[&str],
    ) -> std::process::Command {
        let mut command = std::process::Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--init-groups", "--"])
            .arg(kiln)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.run)
            .env("DOCKER_HOST", &self.host)
            .env("KILN_LOG", "warn");
        if let Some(archives) = std::env::var_os("KILN_GO_ARCHIVES") {
            command.env("KILN_GO_ARCHIVES", archives);
        }
        command
    }
}

#[tokio::test]
async fn a_rootless_podman_releases_as_its_user_with_docker_s_lockfile() {
    if !common::podman_pass() {
        return;
    }
    let rootless = Rootless::from_env();
    let docker_lock = docker_lockfile();

    // A demo world the rootless user owns, and a kiln it can run.
    let world = World::new();
    let kiln = world.dir.path().join("bin/kiln");
    std::fs::create_dir_all(kiln.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &kiln).unwrap();
    let owner = format!("{}:{}", rootless.uid, rootless.gid);
    let chown = std::process::Command::new("chown")
        .args(["-R", &owner])
        .arg(world.dir.path())
        .timed_output()
        .unwrap();
    assert!(chown.status.success(), "{}", text(&chown).1);
    let store = world.store();
    let store = store.to_str().unwrap();

    // doctor: Podman, rootless; the step runs as the user and writes as the user; any check
    // that fails is one of the engine's known limits (rootless on cgroup v1).
    let output = rootless
        .kiln(&kiln, &world.path(), &["doctor", "--json"])
        .timed_output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("doctor:\n{}", text(&output).1));
    assert_eq!(report["engine"]["kind"], "podman", "{report}");
    assert_eq!(report["host"]["rootless"], true, "{report}");
    let user = format!("{}:{}", rootless.uid, rootless.gid);
    let checks = report["checks"].as_array().unwrap();
    let check = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap();
    assert_eq!(check("user")["ok"], true, "{report}");
    assert!(
        check("user")["observed"]
            .as_str()
            .unwrap()
            .contains(&format!("files written {user}")),
        "{report}"
    );
    for problem in report["problems"].as_array().unwrap() {
        assert!(
            problem["fix"]
                .as_str()
                .unwrap()
                .starts_with("a known limit of this engine"),
            "a problem no known limit explains: {problem}"
        );
    }

    // The release, as the user, its steps in the rootless engine's containers: the same
    // lockfile as Docker's, and the world still the user's.
    let client = bollard::Docker::connect_with_unix(
        rootless.host.trim_start_matches("unix://"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let release = [
        "--store", store, "release", "--old", "v1.28.1", "--new", "v1.28.2",
    ];
    let (output, created) =
        common::created_on(&client, rootless.kiln(&kiln, &world.path(), &release)).await;
    assert!(output.status.success(), "rootless:\n{}", text(&output).1);
    common::assert_created(created.len(), 6, 8, &output);
    let lock = std::fs::read_to_string(world.path().join(LOCK)).unwrap();
    assert!(
        lock == docker_lock,
        "the lockfiles made on Docker (-) and on rootless Podman (+) differ:\n{}",
        common::line_diff(docker_lock, &lock)
    );
    let strangers = std::process::Command::new("find")
        .arg(world.dir.path())
        .args(["!", "-uid", &rootless.uid.to_string(), "-print"])
        .timed_output()
        .unwrap();
    assert_eq!(text(&strangers).0, "", "files the user does not own");

    // Again: every step cached, and the rootless engine creates no container.
    let (output, created) =
        common::created_on(&client, rootless.kiln(&kiln, &world.path(), &release)).await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(common::cached_steps(&output), 8, "{}", text(&output).0);
    assert!(
        created.is_empty(),
        "a cached rootless release created {created:?}"
    );
}
