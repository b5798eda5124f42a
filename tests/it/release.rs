//! Release names and the k3s bump on the demo world.

use crate::common::TimedOutput as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::common::{self, docker_or_skip, text};

fn demo(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world");
    let output = common::kiln()
        .args(["demo", "init"])
        .arg(&world)
        .args(extra)
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    (dir, world)
}

fn versions(world: &Path, store: &Path, args: &[&str]) -> std::process::Output {
    common::kiln()
        .current_dir(world)
        .arg("--store")
        .arg(store)
        .arg("versions")
        .args(args)
        .timed_output()
        .unwrap()
}

#[tokio::test]
async fn versions_derives_every_name_from_the_repositories() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (dir, world) = demo(&["--k3s2"]);
    let store = dir.path().join("store");
    let output = versions(
        &world,
        &store,
        &["--old", "v1.28.1", "--new", "v1.28.2", "--json"],
    );
    assert!(output.status.success(), "{}", text(&output).1);
    let names: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        names["old_fork_tag"], "v1.28.1-k3s2",
        "the highest suffix wins"
    );
    assert_eq!(names["new_fork_tag"], "v1.28.2-k3s1");
    assert_eq!(names["old_client"], "v0.28.1");
    assert_eq!(names["new_client"], "v0.28.2");
    assert_eq!(names["release_branch"], "release-1.28");
    assert_eq!(
        names["go_version"], "1.22.10",
        ".go-version at the new upstream tag"
    );
    assert_eq!(names["rc"], "v1.28.2-rc1+k3s1");
    assert_eq!(names["ga_image_tag"], "v1.28.2-k3s1");
    let pinned = versions(
        &world,
        &store,
        &[
            "--old",
            "v1.28.1",
            "--new",
            "v1.28.3",
            "--old-suffix",
            "k3s1",
            "--json",
        ],
    );
    let pinned: serde_json::Value = serde_json::from_slice(&pinned.stdout).unwrap();
    assert_eq!(pinned["old_fork_tag"], "v1.28.1-k3s1");

    // Each bad input gets its own diagnostic.
    for (args, expected) in [
        (
            vec!["--old", "1.28.1", "--new", "v1.28.2"],
            "`1.28.1` is not a Kubernetes version",
        ),
        (
            vec!["--old", "v1.28.1", "--new", "v1.29.0"],
            "are different minor releases",
        ),
        (
            vec!["--old", "v1.28.2", "--new", "v1.28.1"],
            "is not newer than the old",
        ),
        (
            vec!["--old", "v1.28.1", "--new", "v1.28.9"],
            "upstream has no tag v1.28.9",
        ),
        (
            vec!["--old", "v1.28.2", "--new", "v1.28.3"],
            "the fork has no release tag v1.28.2-k3sN",
        ),
        (
            vec![
                "--old",
                "v1.28.1",
                "--new",
                "v1.28.2",
                "--old-suffix",
                "k3s7",
            ],
            "the fork has no release tag v1.28.1-k3s7 (it has: v1.28.1-k3s1, v1.28.1-k3s2)",
        ),
        (
            vec![
                "--old",
                "v1.28.1",
                "--new",
                "v1.28.2",
                "--new-suffix",
                "k3sX",
            ],
            "`k3sX` is not a k3s suffix",
        ),
    ] {
        let output = versions(&world, &store, &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            text(&output).1.contains(expected),
            "{args:?}: {}",
            text(&output).1
        );
    }
    // Without a kiln.toml or flags, kiln says what to pass.
    let output = versions(
        dir.path(),
        &store,
        &["--old", "v1.28.1", "--new", "v1.28.2"],
    );
    assert!(
        text(&output)
            .1
            .contains("pass --upstream, --fork and --k3s"),
        "{}",
        text(&output).1
    );
}

fn checkout(repo: &Path, into: &Path) {
    let status = std::process::Command::new("git")
        .args(["clone", "--quiet", "--branch", "release-1.28"])
        .arg(repo)
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn bump_k3s_changes_exactly_the_release_lines() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (dir, world) = demo(&[]);
    let k3s = dir.path().join("k3s");
    checkout(&world.join("k3s.git"), &k3s);
    let before = std::fs::read_to_string(k3s.join("go.mod")).unwrap();

    // A wrong --old changes nothing.
    let wrong = common::kiln()
        .args(["bump-k3s", "--old", "v1.28.0", "--new", "v1.28.2"])
        .arg(&k3s)
        .timed_output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong).1.contains("no fork tag v1.28.0-k3sN"),
        "{}",
        text(&wrong).1
    );
    assert_eq!(std::fs::read_to_string(k3s.join("go.mod")).unwrap(), before);

    let output = common::kiln()
        .args([
            "bump-k3s", "--old", "v1.28.1", "--new", "v1.28.2", "--go", "1.23.5",
        ])
        .arg(&k3s)
        .timed_output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let diff = std::process::Command::new("git")
        .args(["-C"])
        .arg(&k3s)
        .args(["diff", "-U0", "--no-color"])
        .timed_output()
        .unwrap();
    let diff = String::from_utf8_lossy(&diff.stdout);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    let expected_go_mod = [
        "-\tk8s.io/api => github.com/k3s-io/kubernetes/staging/src/k8s.io/api v1.28.1-k3s1",
        "-\tk8s.io/apimachinery => github.com/k3s-io/kubernetes/staging/src/k8s.io/apimachinery v1.28.1-k3s1",
        "-\tk8s.io/client-go => github.com/k3s-io/kubernetes/staging/src/k8s.io/client-go v1.28.1-k3s1",
        "-\tk8s.io/component-base => github.com/k3s-io/kubernetes/staging/src/k8s.io/component-base v1.28.1-k3s1",
        "-\tk8s.io/kubectl => github.com/k3s-io/kubernetes/staging/src/k8s.io/kubectl v1.28.1-k3s1",
        "-\tk8s.io/kubernetes => github.com/k3s-io/kubernetes v1.28.1-k3s1",
        "+\tk8s.io/api => github.com/k3s-io/kubernetes/staging/src/k8s.io/api v1.28.2-k3s1",
        "+\tk8s.io/apimachinery => github.com/k3s-io/kubernetes/staging/src/k8s.io/apimachinery v1.28.2-k3s1",
        "+\tk8s.io/client-go => github.com/k3s-io/kubernetes/staging/src/k8s.io/client-go v1.28.2-k3s1",
        "+\tk8s.io/component-base => github.com/k3s-io/kubernetes/staging/src/k8s.io/component-base v1.28.2-k3s1",
        "+\tk8s.io/kubectl => github.com/k3s-io/kubernetes/staging/src/k8s.io/kubectl v1.28.2-k3s1",
        "+\tk8s.io/kubernetes => github.com/k3s-io/kubernetes v1.28.2-k3s1",
        "-replace k8s.io/cri-api => github.com/k3s-io/kubernetes/staging/src/k8s.io/cri-api v1.28.1-k3s1",
        "+replace k8s.io/cri-api => github.com/k3s-io/kubernetes/staging/src/k8s.io/cri-api v1.28.2-k3s1",
        "-\tk8s.io/api v0.28.1",
        "-\tk8s.io/apimachinery v0.28.1",
        "-\tk8s.io/client-go v0.28.1",
        "-\tk8s.io/component-base v0.28.1",
        "-\tk8s.io/cri-api v0.28.1",
        "-\tk8s.io/kubectl v0.28.1",
        "-\tk8s.io/kubernetes v1.28.1",
        "+\tk8s.io/api v0.28.2",
        "+\tk8s.io/apimachinery v0.28.2",
        "+\tk8s.io/client-go v0.28.2",
        "+\tk8s.io/component-base v0.28.2",
        "+\tk8s.io/cri-api v0.28.2",
        "+\tk8s.io/kubectl v0.28.2",
        "+\tk8s.io/kubernetes v1.28.2",
    ];
    let go_mod_lines: Vec<&str> = changed
        .iter()
        .copied()
        .filter(|l| !l.contains("golang:") && !l.contains("go-version"))
        .collect();
    assert_eq!(go_mod_lines, expected_go_mod, "{diff}");
    assert!(
        !diff.contains("helper"),
        "the unrelated module moved:\n{diff}"
    );
    assert!(!diff.contains("kubernetes-stale"), "{diff}");
    // The Go bump: both Dockerfiles and both workflows.
    for (file, line) in [
        ("Dockerfile.dapper", "ARG GOLANG=golang:1.23.5-alpine3.18"),
        ("Dockerfile.test", "ARG GOLANG=golang:1.23.5-alpine3.18"),
        (".github/workflows/integration.yaml", "go-version: '1.23.5'"),
        (
            ".github/workflows/unitcoverage.yaml",
            "go-version: '1.23.5'",
        ),
    ] {
        assert!(
            std::fs::read_to_string(k3s.join(file))
                .unwrap()
                .contains(line),
            "{file}"
        );
    }
    assert_eq!(changed.len(), expected_go_mod.len() + 8);
    // Files keep their mode.
    assert_eq!(
        std::fs::metadata(k3s.join("go.mod"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
}

/// A committer identity for the test's own commits (the machine may have none).
const ID: [&str; 4] = [
    "-c",
    "user.name=kiln test",
    "-c",
    "user.email=test@kiln.invalid",
];

/// A go.mod asking for a newer Go than the toolchain's (here a staging module of the new
/// upstream tag says `go 1.99.0`, and k3s's own says `go 1.30`) is reported before any step
/// runs, naming each file and the toolchain's Go; nothing runs, nothing is recorded.
#[tokio::test]
async fn a_go_directive_newer_than_the_toolchain_is_refused_before_any_step() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = crate::common::World::new();
    let git = crate::common::git;
    // Retag v1.28.2 on a commit whose api module asks for Go 1.99.0.
    let scratch = tempfile::tempdir().unwrap();
    let upstream = edited_clone(
        &world,
        scratch.path(),
        "upstream.git",
        "v1.28.2",
        &[("staging/src/k8s.io/api/go.mod", "go 1.20", "go 1.99.0")],
    );
    retag(&upstream, "v1.28.2");
    let k3s = edited_clone(
        &world,
        scratch.path(),
        "k3s.git",
        "release-1.28",
        &[("go.mod", "go 1.20", "go 1.30")],
    );
    git(&k3s, &["push", "--quiet", "origin", "HEAD:release-1.28"]);

    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2"]);
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for said in [
        "2 go.mod file(s) ask for a newer Go than the release's toolchain (Go 1.22.10)",
        "upstream v1.28.2: staging/src/k8s.io/api/go.mod says `go 1.99.0`",
        "k3s release-1.28: go.mod says `go 1.30`",
        "nothing ran",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    assert_eq!(world.records(), 0, "a step ran");
}

/// A clone of the world's `repo` (beside the others in `scratch`) at `rev`, with each
/// `(file, from, to)` edit made (the first `from` replaced) and committed.
fn edited_clone(
    world: &crate::common::World,
    scratch: &Path,
    repo: &str,
    rev: &str,
    edits: &[(&str, &str, &str)],
) -> PathBuf {
    let git = crate::common::git;
    let clone = scratch.join(repo);
    git(
        scratch,
        &[
            "clone",
            "--quiet",
            world.path().join(repo).to_str().unwrap(),
            repo,
        ],
    );
    git(&clone, &["checkout", "--quiet", rev]);
    for (file, from, to) in edits {
        let path = clone.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file}: {text}");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    }
    git(
        &clone,
        &[
            ID[0], ID[1], ID[2], ID[3], "commit", "--quiet", "-am", "edited",
        ],
    );
    clone
}

/// Moves the annotated tag `tag` of `clone`'s origin to `clone`'s HEAD.
fn retag(clone: &Path, tag: &str) {
    let git = crate::common::git;
    git(
        clone,
        &[ID[0], ID[1], ID[2], ID[3], "tag", "--force", "-m", tag, tag],
    );
    git(
        clone,
        &[
            "push",
            "--quiet",
            "--force",
            "origin",
            &format!("refs/tags/{tag}"),
        ],
    );
}

/// A new upstream tag whose `.go-version` names a Go without a pin (1.23.9: a wheel is on this
/// machine, but kiln pins no archive of it): the release is refused before any step, naming
/// the version and both ways to pin it; with `--update-go-lock` the archive is pinned (said
/// loudly, in the lock directory given), the toolchain built, and the release runs in it: the
/// lockfile names that archive and `go version`, and the artifact's own Go check passes.
#[tokio::test]
async fn an_unpinned_go_is_refused_before_any_step_and_pinned_with_update_go_lock() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = crate::common::World::new();
    let scratch = tempfile::tempdir().unwrap();
    let upstream = edited_clone(
        &world,
        scratch.path(),
        "upstream.git",
        "v1.28.2",
        &[
            (".go-version", "1.22.10", "1.23.9"),
            (
                "build/dependencies.yaml",
                "version: 1.22.10",
                "version: 1.23.9",
            ),
        ],
    );
    retag(&upstream, "v1.28.2");
    let release = ["release", "--old", "v1.28.1", "--new", "v1.28.2"];
    let (output, created) = common::kiln_counting_containers(&docker, &world, &release).await;
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for said in [
        "Go 1.23.9 has no pin",
        "kiln image toolchain --go 1.23.9",
        "--update-go-lock",
        "nothing ran",
    ] {
        assert!(stderr.contains(said), "{said}: {stderr}");
    }
    assert_eq!(created, 0, "a container ran");
    assert_eq!(world.records(), 0, "a step ran");

    // A pin that could not be written (no such lock directory) is refused before anything.
    let pins = scratch.path().join("pins");
    let mut args = release.to_vec();
    args.extend(["--update-go-lock", "--go-lock-dir", pins.to_str().unwrap()]);
    let (output, created) = common::kiln_counting_containers(&docker, &world, &args).await;
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("lock directory {} does not exist", pins.display())),
        "{stderr}"
    );
    assert_eq!((created, world.records()), (0, 0));
    std::fs::create_dir(&pins).unwrap();
    let out = scratch.path().join("artifacts");
    let mut args = release.to_vec();
    args.extend([
        "--update-go-lock",
        "--go-lock-dir",
        pins.to_str().unwrap(),
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let output = world.kiln(&args);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("TRUST ON FIRST USE"), "{stderr}");
    let wheel = common::go_wheel("1.23.9");
    let digest = kiln::hash::Digest::of(&std::fs::read(wheel).unwrap());
    let lock_text = std::fs::read_to_string(pins.join("go.lock")).unwrap();
    assert!(
        lock_text.contains(&format!("go 1.23.9 linux-amd64 {digest} ")),
        "{lock_text}"
    );
    let lock: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(lock["inputs"]["toolchain"]["go"], "1.23.9");
    assert_eq!(lock["inputs"]["toolchain"]["archive"], digest.to_string());
    assert_eq!(
        lock["inputs"]["toolchain"]["go_version"],
        "go version go1.23.9 linux/amd64"
    );
    let ran = std::process::Command::new(out.join("k3s"))
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", text(&ran).1);
    assert!(
        String::from_utf8_lossy(&ran.stdout).contains("golang go1.23.9"),
        "{}",
        text(&ran).0
    );
    // With that lock directory the release needs no flag any more: it is fully cached.
    let mut args = release.to_vec();
    args.extend(["--go-lock-dir", pins.to_str().unwrap()]);
    let (output, created) = common::kiln_counting_containers(&docker, &world, &args).await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(created, 0);
}

/// A build step that writes into its module cache cannot change what the next release reads:
/// one world's k3s build plants a Go file into the fork module it just extracted; a clean
/// world released afterwards on the same engine (same versions, same step user, same Go build
/// cache) builds from kiln's proxy alone, and its artifact carries no trace of the plant.
#[tokio::test]
async fn a_step_writing_into_its_module_cache_cannot_change_the_next_release() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let planter = crate::common::World::new();
    let scratch = tempfile::tempdir().unwrap();
    // Planted before the build loads any package: Go indexes a module-cache directory once (in
    // GOCACHE, keyed by its path, trusting it immutable), so the index carries the plant too.
    let plant = ". ./scripts/version.sh\n\
                 go mod download k8s.io/kubernetes\n\
                 d=\"$(go list -m -f '{{with .Replace}}{{.Dir}}{{else}}{{.Dir}}{{end}}' k8s.io/kubernetes)/pkg/kubernetes\"\n\
                 chmod -R u+w \"$d\"\n\
                 printf 'package kubernetes\\n\\nfunc init() { println(\"PLANTED\") }\\n' > \"$d/planted.go\"\n";
    let k3s = edited_clone(
        &planter,
        scratch.path(),
        "k3s.git",
        "release-1.28",
        &[("scripts/build", ". ./scripts/version.sh\n", plant)],
    );
    crate::common::git(&k3s, &["push", "--quiet", "origin", "HEAD:release-1.28"]);
    let planted_out = scratch.path().join("planted");
    planter.release("v1.28.2", &["--out", planted_out.to_str().unwrap()]);
    // The plant works: the planter's own artifact carries it.
    let ran = std::process::Command::new(planted_out.join("k3s"))
        .output()
        .unwrap();
    assert!(text(&ran).1.contains("PLANTED"), "{}", text(&ran).1);

    let clean = crate::common::World::new();
    let out = clean.dir.path().join("artifacts");
    clean.release("v1.28.2", &["--out", out.to_str().unwrap()]);
    let ran = std::process::Command::new(out.join("k3s"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&ran);
    assert!(ran.status.success(), "{stderr}");
    assert!(
        !stdout.contains("PLANTED") && !stderr.contains("PLANTED"),
        "the planted module file reached the next release:\n{stdout}{stderr}"
    );
    assert!(stdout.contains("k3s version v1.28.2-k3s1"), "{stdout}");
}
