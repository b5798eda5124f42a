//! Diagnostics for a missing or wrong engine: no engine needed.

use crate::common::TimedOutput as _;
use crate::common::{self, text};

fn doctor_with_host(host: &str) -> (Option<i32>, String) {
    let output = common::kiln()
        .env("DOCKER_HOST", host)
        .arg("doctor")
        .timed_output()
        .unwrap();
    let (_, stderr) = text(&output);
    (output.status.code(), stderr)
}

#[test]
fn unreachable_tcp_engine_says_how_to_start_one() {
    let (code, stderr) = doctor_with_host("tcp://127.0.0.1:1");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no Docker engine answers at tcp://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/engine start"), "{stderr}");
    assert!(stderr.contains("DOCKER_HOST"), "{stderr}");
}

#[test]
fn missing_socket_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}/docker.sock", dir.path().display());
    let (code, stderr) = doctor_with_host(&host);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("no Docker engine answers at {host}")),
        "{stderr}"
    );
    assert!(stderr.contains("start one"), "{stderr}");
}

#[test]
fn malformed_docker_host_is_named() {
    let (code, stderr) = doctor_with_host("bogus://nowhere");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("DOCKER_HOST `bogus://nowhere` is not a Docker engine address"),
        "{stderr}"
    );
    assert!(stderr.contains("unix:///"), "{stderr}");
}

#[test]
fn unsupported_go_line_is_refused_before_anything_runs() {
    let output = common::kiln()
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args(["image", "bootstrap", "--go", "1.19"])
        .timed_output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("Go `1.19` cannot be bootstrapped offline"),
        "{stderr}"
    );
    assert!(stderr.contains("1.21, 1.22 or 1.23"), "{stderr}");
}

#[test]
fn bad_sandbox_arguments_are_explained() {
    let output = common::kiln()
        .args([
            "sandbox", "run", "--image", "x", "--env", "NOEQUALS", "--", "true",
        ])
        .timed_output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("--env `NOEQUALS` must look like KEY=VALUE"),
        "{stderr}"
    );
}

/// The committed demo lockfile with `edit` applied, written to `dir`.
fn edited_lockfile(
    dir: &std::path::Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lockfiles/v1.28.2-k3s1.lock.json"),
    )
    .unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    let path = dir.join("bad.lock.json");
    std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    path
}

type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

#[test]
fn unsafe_lockfiles_are_refused_before_any_git_or_engine_action() {
    let dir = tempfile::tempdir().unwrap();
    // A `git` first on PATH that records being run: no command may reach it.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let marker = dir.path().join("git-ran");
    std::fs::write(
        bin.join("git"),
        format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("git"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let remote = dir.path().join("remote.git");
    let cases: Vec<(&str, Edit)> = vec![
        (
            "tags: `v1.28.2-k3s1;touch pwned`",
            Box::new(|v| {
                v["tags"]["v1.28.2-k3s1;touch pwned"] = v["k3s"]["commit"].clone();
            }),
        ),
        (
            "tags: `-v1.28.2-k3s1`",
            Box::new(|v| {
                v["tags"]["-v1.28.2-k3s1"] = v["k3s"]["commit"].clone();
            }),
        ),
        (
            "k3s.branch: `--upload-pack=touch pwned`",
            Box::new(|v| {
                v["k3s"]["branch"] = "--upload-pack=touch pwned".into();
            }),
        ),
        (
            "artifacts: `../../etc/passwd`",
            Box::new(|v| {
                v["artifacts"]["../../etc/passwd"] = v["artifacts"]["k3s"].clone();
            }),
        ),
        ("format version 7", Box::new(|v| v["version"] = 7.into())),
        (
            "not-a-digest",
            Box::new(|v| {
                v["steps"]["tag"]["outputs"]["tag.bundle"] = "not-a-digest".into();
            }),
        ),
    ];
    for (expected, edit) in cases {
        let lock = edited_lockfile(dir.path(), edit);
        for args in [
            vec!["push", "--remote"],
            vec!["push", "--dry-run", "--remote"],
            vec!["verify-tags", "--remote"],
        ] {
            let output = common::kiln()
                .env("PATH", &path)
                .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
                .arg("--store")
                .arg(dir.path().join("store"))
                .args(&args)
                .arg(&remote)
                .arg(&lock)
                .timed_output()
                .unwrap();
            let (stdout, stderr) = text(&output);
            assert_eq!(
                output.status.code(),
                Some(1),
                "{args:?} {expected}: {stdout}{stderr}"
            );
            assert!(
                stderr.contains(expected),
                "{args:?}: expected `{expected}` in {stderr}"
            );
            assert!(stdout.is_empty(), "{args:?}: {stdout}");
            assert!(!marker.exists(), "{args:?} {expected}: git ran");
            assert!(
                !dir.path().join("store").exists(),
                "{args:?}: the store was touched"
            );
        }
    }
}
