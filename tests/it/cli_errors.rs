//! Diagnostics for a missing or wrong engine: no engine needed.

use crate::common::{self, text};

fn doctor_with_host(host: &str) -> (Option<i32>, String) {
    let output = common::kiln()
        .env("DOCKER_HOST", host)
        .arg("doctor")
        .output()
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
        .output()
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
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains("--env `NOEQUALS` must look like KEY=VALUE"),
        "{stderr}"
    );
}
