//! `kiln verify`: rebuilds from the lockfile in a fresh store, on the real engine.

use std::path::Path;

use crate::common::{World, docker_or_skip, git, kiln_counting_containers, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

fn verify_json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}:\n{}\n{}", text(output).0, text(output).1))
}

#[tokio::test]
async fn verify_rebuilds_everything_afresh_and_matches_a_fresh_release() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    world.release("v1.28.2", &[]);
    // Every step is cached in the captain's store, yet verify runs every container step again.
    let (output, created) =
        kiln_counting_containers(&docker, &world, &["verify", LOCK, "--json"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
    let report = verify_json(&output);
    assert_eq!(report["matches"], true);
    assert_eq!(
        created, 4,
        "rebase, tag, k3s-tidy and build must all run again"
    );
    let outputs = report["outputs"].as_array().unwrap();
    for prefix in ["tag ", "module ", "k3s ", "artifact ", "step build "] {
        assert!(
            outputs
                .iter()
                .any(|o| o["what"].as_str().unwrap().starts_with(prefix)),
            "{prefix}"
        );
    }
    assert!(outputs.iter().all(|o| o["matches"] == true));
    assert!(
        report["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["matches"] == true)
    );
    // No scratch store is left behind.
    let tmp = world.store().join("store-v1/tmp");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

    // --steps git: no build, and still every git output compared.
    let (output, created) = kiln_counting_containers(
        &docker,
        &world,
        &["verify", LOCK, "--steps", "git", "--json"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
    assert_eq!(created, 3);
    let report = verify_json(&output);
    let outputs = report["outputs"].as_array().unwrap();
    assert!(outputs.iter().any(|o| o["what"] == "tag v1.28.2-k3s1"));
    assert!(
        !outputs
            .iter()
            .any(|o| o["what"].as_str().unwrap().starts_with("artifact "))
    );

    // A lockfile that does not match what the repositories rebuild: a mismatch, exit 3.
    let mut lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(world.path().join(LOCK)).unwrap()).unwrap();
    lock["tags"]["v1.28.2-k3s1"] = "0".repeat(40).into();
    std::fs::write(
        world.path().join("tampered.lock.json"),
        serde_json::to_string_pretty(&lock).unwrap(),
    )
    .unwrap();
    let output = world.kiln(&["verify", "tampered.lock.json", "--steps", "git"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output).1);
    let stdout = text(&output).0;
    assert!(stdout.contains("NOT REPRODUCIBLE"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("tag v1.28.2-k3s1 ") && l.ends_with("MISMATCH")),
        "{stdout}"
    );
}

/// Makes the demo's k3s build embed the real time (the host clock, bypassing the toolchain's
/// `date` shim) on the release branch.
fn make_build_unreproducible(world: &World) {
    let work = world.dir.path().join("k3s-work");
    let k3s = world.path().join("k3s.git");
    git(
        world.dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            "release-1.28",
            k3s.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let script = work.join("scripts/build");
    let text = std::fs::read_to_string(&script).unwrap();
    let original = "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)";
    assert!(text.contains(original));
    std::fs::write(
        &script,
        text.replace(
            original,
            "BUILD_DATE=$(/bin/date -u +%Y-%m-%dT%H:%M:%S.%NZ)",
        ),
    )
    .unwrap();
    let pinned = [
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.invalid",
    ];
    let mut commit = pinned.to_vec();
    commit.extend(["commit", "--quiet", "-am", "build: stamp the real time"]);
    std::process::Command::new("git")
        .arg("-C")
        .arg(&work)
        .args(&commit)
        .env("GIT_AUTHOR_DATE", "@1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "@1700000000 +0000")
        .status()
        .unwrap();
    git(&work, &["push", "--quiet", "origin", "release-1.28"]);
}

#[tokio::test]
async fn verify_names_the_artifact_and_offset_of_a_nonreproducible_build() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    make_build_unreproducible(&world);
    world.release("v1.28.2", &[]);
    let keep = world.dir.path().join("diffs");
    let output = world.kiln(&["verify", LOCK, "--keep", keep.to_str().unwrap(), "--json"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output).1);
    let report = verify_json(&output);
    assert_eq!(report["matches"], false);
    let bad: Vec<&str> = report["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["matches"] == false)
        .map(|o| o["what"].as_str().unwrap())
        .collect();
    assert_eq!(bad, ["artifact k3s", "step build artifacts/"], "{report}");
    let file = report["differing_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["what"] == "artifact k3s")
        .unwrap_or_else(|| panic!("{report}"));
    let offset = file["first_difference"].as_u64().unwrap();
    let locked = Path::new(file["locked_copy"].as_str().unwrap());
    let rebuilt = Path::new(file["rebuilt_copy"].as_str().unwrap());
    assert!(locked.starts_with(&keep) && rebuilt.starts_with(&keep));
    let (a, b) = (
        std::fs::read(locked).unwrap(),
        std::fs::read(rebuilt).unwrap(),
    );
    assert_eq!(file["locked_size"].as_u64().unwrap(), a.len() as u64);
    let at = usize::try_from(offset).unwrap();
    assert_eq!(a[..at], b[..at]);
    assert_ne!(a.get(at), b.get(at));
    assert_ne!(file["locked_sha256"], file["rebuilt_sha256"]);

    // The human report names the artifact, sizes, digests, the offset and the copies.
    let output = world.kiln(&["verify", LOCK, "--keep", keep.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    let stdout = text(&output).0;
    assert!(stdout.contains("differs   artifact k3s"), "{stdout}");
    assert!(
        stdout.contains("first differing byte at offset"),
        "{stdout}"
    );
    assert!(stdout.contains(&keep.display().to_string()), "{stdout}");

    // The git half of the release is still reproducible.
    let output = world.kiln(&["verify", LOCK, "--steps", "git"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);

    // A directory kiln did not make is never replaced.
    let mine = world.dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes"), "keep me").unwrap();
    let output = world.kiln(&["verify", LOCK, "--keep", mine.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("was not made by kiln verify"),
        "{}",
        text(&output).1
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes")).unwrap(),
        "keep me"
    );
}
