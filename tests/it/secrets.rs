//! Secrets leakage (RELIABILITY.md row 27): a captain's credentials — a git credential helper
//! and auth header in their git config, an SSH agent holding a key, registry auth in their
//! Docker config, tokens in their environment — all carry one canary. A `kiln run` with a git
//! input and debug logging must leave the canary nowhere: not in the step's environment,
//! files or mounts, not in the container's configuration, the store, or what kiln printed.

use crate::common::TimedOutput as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{Workspace, docker_or_skip, text, unique, wait_for_container};

/// Every file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && std::fs::read(&path)
                    .unwrap_or_default()
                    .windows(needle.len())
                    .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

/// A helper process, killed (by its pid) when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_captains_credentials_reach_no_step_store_container_or_log() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let engine = docker.sandbox.engine().docker().clone();
    let canary = format!("kilncanary{}", unique());
    let ws = Workspace::new();

    // The captain's home: git credentials and an auth header, Docker registry auth.
    let home = ws.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        format!(
            "[credential]\n\thelper = \"!f() {{ echo username=captain; echo password={canary}; }}; f\"\n\
             [http]\n\textraHeader = Authorization: Bearer {canary}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        home.join(".docker/config.json"),
        format!("{{\"auths\":{{\"registry.example\":{{\"auth\":\"{canary}\"}}}}}}"),
    )
    .unwrap();
    // An SSH agent holding a key whose comment is the canary.
    let agent_sock = ws.path().join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_sock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Killed(agent);
    let key = ws.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &canary, "-f"])
        .arg(&key)
        .timed_output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made).1);
    for _ in 0..50 {
        if agent_sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let added = Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent_sock)
        .timed_output()
        .unwrap();
    assert!(added.status.success(), "{}", text(&added).1);

    // The step shows everything it can see; it waits a little so the test can inspect it.
    ws.write_plan(&format!(
        r#"
[[step]]
name = "look-{id}"
image = "toolchain:1.23"
argv = ["/bin/sh", "-c", "sleep 3; {{ env; ls -la /run /tmp ~ /in; cat /proc/self/mountinfo; ls -R /in; }} > seen.txt 2>&1"]
outputs = ["seen.txt"]
[step.inputs]
src = {{ git = "repo", rev = "v1" }}
"#,
        id = unique()
    ));
    let secret_env = [
        ("HOME", home.to_str().unwrap().to_owned()),
        ("SSH_AUTH_SOCK", agent_sock.to_str().unwrap().to_owned()),
        ("GITHUB_TOKEN", canary.clone()),
        ("AWS_SECRET_ACCESS_KEY", canary.clone()),
        ("GIT_ASKPASS", format!("/bin/echo-{canary}")),
        (
            "DOCKER_CONFIG",
            home.join(".docker").to_str().unwrap().to_owned(),
        ),
    ];
    let mut command = ws.kiln();
    command
        .env("KILN_LOG", "debug")
        .args(["run", "--file", "plan.toml", "--json"]);
    for (name, value) in &secret_env {
        command.env(name, value);
    }
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the engine was told about the container: its environment, mounts and labels.
    let container = wait_for_container(&engine, &child).await;
    let inspected = engine.inspect_container(&container, None).await.unwrap();
    let inspected = serde_json::to_string(&inspected).unwrap();
    let output = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");

    assert!(
        !inspected.contains(&canary),
        "in docker inspect: {inspected}"
    );
    assert!(
        !inspected.contains("agent.sock") && !inspected.contains(home.to_str().unwrap()),
        "an agent socket or the captain's home is mounted: {inspected}"
    );
    assert!(!stdout.contains(&canary), "in kiln's output: {stdout}");
    assert!(!stderr.contains(&canary), "in kiln's log: {stderr}");
    let leaked = files_containing(&ws.store(), canary.as_bytes());
    assert!(leaked.is_empty(), "in the store: {leaked:?}");
    // What the step saw (its output, exported): no canary, no agent, no captain's home.
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let digest = report["steps"][0]["outputs"]["seen.txt"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = std::fs::read_to_string(ws.store().join(format!(
        "store-v1/blobs/sha256/{}/{}",
        &digest[7..9],
        &digest[7..]
    )))
    .unwrap();
    assert!(seen.contains("HOME=/home/kiln"), "{seen}");
    for absent in [
        canary.as_str(),
        "SSH_AUTH_SOCK",
        "agent.sock",
        "GITHUB_TOKEN",
        "AWS_SECRET",
        "GIT_ASKPASS",
        "DOCKER_CONFIG",
        ".gitconfig",
        "docker.sock",
    ] {
        assert!(!seen.contains(absent), "the step saw {absent}:\n{seen}");
    }
}
