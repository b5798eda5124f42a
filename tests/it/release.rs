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
        names["go_version"], "1.23.5",
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
