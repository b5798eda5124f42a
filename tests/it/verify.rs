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
        created, 6,
        "rebase, tag, modules-fetch, k3s-tidy, k3s-download and build must all run again"
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
    // rebase, tag, modules-fetch and k3s-tidy.
    assert_eq!(created, 4);
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

/// Row 26: a lockfile that disagrees with what the store and the repositories give. `release
/// --frozen` holds a release to its lockfile and writes nothing on drift; `cache push` refuses
/// a lockfile whose step outputs are not the store's before it publishes anything.
#[tokio::test]
async fn a_lockfile_that_disagrees_with_the_store_is_refused() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    world.release("v1.28.2", &[]);
    let path = world.path().join(LOCK);
    let locked = std::fs::read(&path).unwrap();
    let frozen = [
        "release", "--old", "v1.28.1", "--new", "v1.28.2", "--frozen",
    ];

    // The same release, frozen: nothing runs, nothing is rewritten.
    let (output, created) = kiln_counting_containers(&docker, &world, &frozen).await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(created, 0);
    assert_eq!(std::fs::read(&path).unwrap(), locked);

    // `kiln verify` rebuilds with the Go archive the lockfile records, never another one of
    // that version: a lockfile naming an archive nothing pins is refused before any step.
    let mut other_go: serde_json::Value = serde_json::from_slice(&locked).unwrap();
    let unpinned = format!("sha256:{}", "cd".repeat(32));
    other_go["inputs"]["toolchain"]["archive"] = serde_json::Value::String(unpinned.clone());
    let other_path = world.path().join("other-go.lock.json");
    std::fs::write(&other_path, serde_json::to_vec_pretty(&other_go).unwrap()).unwrap();
    let (output, created) =
        kiln_counting_containers(&docker, &world, &["verify", other_path.to_str().unwrap()]).await;
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the lockfile records Go 1.22.10 built from the archive {unpinned}, which has no pin \
             here"
        )),
        "{stderr}"
    );
    assert_eq!(created, 0, "a step ran");

    // One step output's digest edited in the lockfile.
    let mut lock: serde_json::Value = serde_json::from_slice(&locked).unwrap();
    let (step, output_path) = {
        let steps = lock["steps"].as_object().unwrap();
        let (step, locked_step) = steps
            .iter()
            .find(|(_, s)| !s["outputs"].as_object().unwrap().is_empty())
            .unwrap();
        let output = locked_step["outputs"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap();
        (step.clone(), output.clone())
    };
    let forged = format!("sha256:{}", "ab".repeat(32));
    lock["steps"][&step]["outputs"][&output_path] = serde_json::Value::String(forged.clone());
    let edited = serde_json::to_vec_pretty(&lock).unwrap();
    std::fs::write(&path, &edited).unwrap();

    // --frozen: refused, naming the value that differs; the lockfile, --out are left alone.
    let out = world.dir.path().join("out");
    let mut args = frozen.to_vec();
    args.extend(["--out", out.to_str().unwrap()]);
    let output = world.kiln(&args);
    let stderr = text(&output).1;
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "steps.{step}.outputs.{output_path}: \"{forged}\" →"
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), edited);
    assert!(!out.exists(), "--out was written despite the drift");

    // --frozen with no lockfile to hold it to.
    let empty = world.dir.path().join("no-locks");
    let mut args = frozen.to_vec();
    args.extend(["--lockfile-dir", empty.to_str().unwrap()]);
    let output = world.kiln(&args);
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("there is no lockfile"),
        "{}",
        text(&output).1
    );

    // `cache push` of the edited lockfile: refused before any registry is spoken to (the
    // address below refuses connections; the error is the disagreement, not the network).
    let key = world.dir.path().join("signer.key");
    let output = crate::common::TimedOutput::timed_output(
        crate::common::kiln().args(["cache", "keygen"]).arg(&key),
    )
    .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let output = world.kiln(&[
        "cache",
        "push",
        "--lockfile",
        LOCK,
        "--cache",
        "oci://127.0.0.1:9/k3s/cache",
        "--signing-key",
        key.to_str().unwrap(),
    ]);
    let stderr = text(&output).1;
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "step {step}, output {output_path}: the lockfile says {forged}"
        )),
        "{stderr}"
    );
}
