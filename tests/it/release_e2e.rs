//! `kiln release` end to end on the demo world, against the real engine.

use crate::common::TimedOutput as _;
use crate::common::{self, World, docker_or_skip, git, text};

/// Runs `kiln release …` and counts the step containers that process created.
async fn release_counting_containers(
    docker: &common::Docker,
    world: &World,
    args: &[&str],
) -> (std::process::Output, usize) {
    let mut all = vec!["release"];
    all.extend_from_slice(args);
    common::kiln_counting_containers(docker, world, &all).await
}

#[tokio::test]
async fn the_demo_release_is_complete_correct_cached_and_reproducible() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let refs_before = world.refs();
    let out = world.dir.path().join("artifacts");
    let (output, created) = release_counting_containers(
        &docker,
        &world,
        &[
            "--old",
            "v1.28.1",
            "--new",
            "v1.28.2",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "release failed:\n{}",
        text(&output).1
    );
    let lock: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // rebase, tag, modules-fetch, k3s-tidy, k3s-download and build run in containers; modules
    // and k3s-edit are builtins.
    common::assert_created(created, 6, 8, &output);
    assert_eq!(world.refs(), refs_before, "kiln changed a user repository");

    // The fork's new tag set: 1 + 6 staging tags, all on one stamp commit.
    let tags = lock["tags"].as_object().unwrap();
    assert_eq!(tags.len(), 7, "{tags:?}");
    let stamp = tags["v1.28.2-k3s1"].as_str().unwrap();
    assert!(tags.values().all(|c| c == stamp));
    for module in [
        "api",
        "apimachinery",
        "client-go",
        "component-base",
        "cri-api",
        "kubectl",
    ] {
        assert!(
            tags.contains_key(&format!("staging/src/k8s.io/{module}/v1.28.2-k3s1")),
            "{module}"
        );
    }
    // Restore the tags from the bundle into a scratch clone and check the history.
    let scratch = world.dir.path().join("fork-check");
    git(
        world.dir.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            world.path().join("fork.git").to_str().unwrap(),
            scratch.to_str().unwrap(),
        ],
    );
    let bundle = world.blob(
        lock["steps"]["tag"]["outputs"]["tag.bundle"]
            .as_str()
            .unwrap(),
    );
    git(
        &scratch,
        &[
            "fetch",
            "--quiet",
            bundle.to_str().unwrap(),
            "refs/tags/*:refs/tags/*",
        ],
    );
    assert_eq!(
        git(&scratch, &["log", "-1", "--format=%s", stamp]).trim(),
        "v1.28.2-k3s1"
    );
    let parent = git(&scratch, &["rev-parse", &format!("{stamp}~1")]);
    assert_eq!(
        parent.trim(),
        git(
            &scratch,
            &["show", "-s", "--format=%H", &format!("{stamp}~1")]
        )
        .trim()
    );
    let subjects = git(
        &scratch,
        &["log", "--format=%s", &format!("v1.28.2..{stamp}")],
    );
    assert_eq!(
        subjects.lines().collect::<Vec<_>>(),
        [
            "v1.28.2-k3s1",
            "Raise the default client rate limit for embedded use",
            "Add k3s tag.sh"
        ]
    );
    assert_eq!(
        git(
            &scratch,
            &["log", "-1", "--format=%cI %cn", &format!("{stamp}~1")]
        )
        .trim(),
        "2023-09-13T12:00:00Z K3s Release Captain"
    );
    assert!(git(&scratch, &["tag", "-l", "v0.0.0"]).trim().is_empty());

    // k3s: exactly the release's go.mod lines, the Go bump, kiln's sums in go.sum.
    let k3s = world.k3s_with_release_branch(&lock, "k3s-check");
    assert_eq!(
        git(&k3s, &["rev-parse", "v1.28.2-k3s1"]).trim(),
        lock["k3s"]["commit"].as_str().unwrap()
    );
    let diff = git(
        &k3s,
        &[
            "diff",
            "-U0",
            "origin/release-1.28",
            "v1.28.2-k3s1",
            "--",
            "go.mod",
        ],
    );
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    // The fork's tags, Kubernetes' versions, and semver, which the new upstream raises.
    assert_eq!(changed.len(), 2 * (6 + 1 + 7 + 1), "{diff}");
    assert!(
        changed
            .iter()
            .any(|l| l.starts_with('+') && l.contains("github.com/kiln-demo/semver v1.3.0")),
        "{diff}"
    );
    assert!(
        changed.iter().all(|l| l.contains("v1.28.2-k3s1")
            || l.contains("github.com/kiln-demo/semver")
            || l.contains("v0.28.2")
            || l.contains("v1.28.2")
            || l.contains("v1.28.1")
            || l.contains("v0.28.1")),
        "{diff}"
    );
    assert!(!diff.contains("helper"), "{diff}");
    for (file, line) in [
        ("Dockerfile.dapper", "golang:1.22.10-alpine3.18"),
        ("Dockerfile.test", "golang:1.22.10-alpine3.18"),
        (
            ".github/workflows/integration.yaml",
            "go-version: '1.22.10'",
        ),
        (
            ".github/workflows/unitcoverage.yaml",
            "go-version: '1.22.10'",
        ),
    ] {
        assert!(
            git(&k3s, &["show", &format!("v1.28.2-k3s1:{file}")]).contains(line),
            "{file}"
        );
    }
    let go_sum = git(&k3s, &["show", "v1.28.2-k3s1:go.sum"]);
    let mut sums_checked = 0;
    for module in lock["modules"].as_array().unwrap() {
        let (m, v) = (
            module["module"].as_str().unwrap(),
            module["version"].as_str().unwrap(),
        );
        let zip_line = format!("{m} {v} {}", module["h1"].as_str().unwrap());
        if go_sum.contains(&format!("{m} {v} ")) {
            assert!(
                go_sum.contains(&zip_line),
                "{zip_line} not in go.sum:\n{go_sum}"
            );
            sums_checked += 1;
        }
    }
    assert!(sums_checked >= 3, "{go_sum}");
    // Titled and signed off as the runbook does, by the captain kiln.toml names.
    let message = git(&k3s, &["log", "-1", "--format=%B", "v1.28.2-k3s1"]);
    assert!(message.starts_with("Update to v1.28.2\n"), "{message}");
    assert!(
        message.contains("Signed-off-by: K3s Release Captain <captain@kiln-demo.invalid>"),
        "{message}"
    );

    // `kiln push --dry-run` prints the lines tag.sh printed, sorted, plus the k3s branch.
    let lock_path = world.path().join("lockfiles/v1.28.2-k3s1.lock.json");
    let push = common::kiln()
        .args(["push", "--dry-run"])
        .arg(&lock_path)
        .timed_output()
        .unwrap();
    assert!(push.status.success(), "{}", text(&push).1);
    let tag_sh_lines = std::fs::read_to_string(
        world.blob(lock["steps"]["tag"]["outputs"]["push"].as_str().unwrap()),
    )
    .unwrap();
    let mut expected: Vec<String> = tag_sh_lines.lines().map(str::to_owned).collect();
    expected.push("git push $K3S_REMOTE v1.28.2-k3s1".into());
    assert_eq!(text(&push).0.lines().collect::<Vec<_>>(), expected);
    // A lockfile naming a tag outside the allowlist is refused before anything runs.
    let tampered = world.dir.path().join("tampered.lock.json");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(&lock_path)
            .unwrap()
            .replace("\"v1.28.2-k3s1\": \"", "\"v1.28.2-k3s1;rm -rf ~\": \""),
    )
    .unwrap();
    let refused = common::kiln()
        .args(["push", "--dry-run"])
        .arg(&tampered)
        .timed_output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).1.contains("is not an acceptable ref name"),
        "{}",
        text(&refused).1
    );
    assert!(text(&refused).0.is_empty());

    // The artifact runs and says what it is.
    let k3s_bin = std::process::Command::new(out.join("k3s"))
        .timed_output()
        .unwrap();
    let printed = String::from_utf8_lossy(&k3s_bin.stdout);
    assert!(printed.contains("k3s version v1.28.2-k3s1"), "{printed}");
    assert!(printed.contains("kubernetes v1.28.2-k3s1"), "{printed}");
    // Built in the exact Go of upstream's .go-version, as k3s's own check demands (it refuses
    // to run otherwise); the lockfile says which distribution and what `go version` printed.
    assert!(k3s_bin.status.success(), "{}", text(&k3s_bin).1);
    assert!(printed.contains("golang go1.22.10"), "{printed}");
    assert_eq!(lock["inputs"]["toolchain"]["go"], "1.22.10");
    assert_eq!(
        lock["inputs"]["toolchain"]["go_version"],
        "go version go1.22.10 linux/amd64"
    );
    // Every container step ran in that toolchain (its records name the image identity).
    let mut in_toolchain = 0;
    for entry in std::fs::read_dir(world.store().join("store-v1/records")).unwrap() {
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        if record["derivation"]["argv"][0] == "/bin/bash" {
            assert_eq!(
                record["derivation"]["image"], lock["inputs"]["toolchain"]["image"],
                "{}",
                record["name"]
            );
            in_toolchain += 1;
        }
    }
    assert_eq!(
        in_toolchain, 6,
        "rebase, tag, modules-fetch, k3s-tidy, k3s-download and build"
    );
    let pins = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("images/go/go.lock"),
    )
    .unwrap();
    let archive = lock["inputs"]["toolchain"]["archive"].as_str().unwrap();
    assert!(
        pins.lines()
            .any(|l| l.starts_with("go 1.22.10 ") && l.contains(archive)),
        "{archive} is not a pin of Go 1.22.10:\n{pins}"
    );
    assert_eq!(
        lock["artifacts"]["k3s"]["size"].as_u64().unwrap(),
        std::fs::metadata(out.join("k3s")).unwrap().len()
    );

    // A second run is fully cached, starts no container, and gives the same lockfile.
    let first_text = std::fs::read_to_string(&lock_path).unwrap();
    let (output, created) =
        release_counting_containers(&docker, &world, &["--old", "v1.28.1", "--new", "v1.28.2"])
            .await;
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(common::cached_steps(&output), 8, "{}", text(&output).0);
    assert_eq!(created, 0, "a fully cached release started a container");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), first_text);

    // Another directory, another store: the same lockfile, byte for byte.
    let other = World::new();
    other.release("v1.28.2", &[]);
    assert_eq!(
        std::fs::read_to_string(other.path().join("lockfiles/v1.28.2-k3s1.lock.json")).unwrap(),
        first_text
    );
}

#[tokio::test]
async fn a_new_version_reruns_what_depends_on_it_and_plan_says_why() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    world.release("v1.28.2", &[]);
    let toolchain_before = kiln::image::list_toolchains(docker.sandbox.engine())
        .await
        .unwrap();

    let output = world.kiln(&["plan", "--old", "v1.28.1", "--new", "v1.28.3", "--json"]);
    assert!(output.status.success(), "{}", text(&output).1);
    let planned: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let by_name = |name: &str| {
        planned
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("rebase")["status"], "will-run");
    let why: Vec<String> = serde_json::from_value(by_name("rebase")["why"].clone()).unwrap();
    assert!(
        why.iter()
            .any(|w| w == "env `NEW_K8S` changed: v1.28.2 → v1.28.3"),
        "{why:?}"
    );
    let why: Vec<String> = serde_json::from_value(by_name("k3s-edit")["why"].clone()).unwrap();
    assert!(
        why.iter()
            .any(|w| w == "input `new_k8s` changed: v1.28.2 → v1.28.3"),
        "{why:?}"
    );
    assert_eq!(by_name("build")["status"], "pending");
    // The identity is an input: plan takes it as release does.
    let output = world.kiln(&["plan", "--old", "v1.28.1", "--new", "v1.28.2", "--json"]);
    let planned: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        planned
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "cached"),
        "{planned}"
    );
    let output = world.kiln(&[
        "plan",
        "--old",
        "v1.28.1",
        "--new",
        "v1.28.2",
        "--name",
        "Someone Else",
        "--json",
    ]);
    let planned: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let why: Vec<String> = serde_json::from_value(planned[0]["why"].clone()).unwrap();
    assert!(
        why.iter()
            .any(|w| w.starts_with("env `GIT_AUTHOR_NAME` changed")),
        "{why:?}"
    );

    // v1.28.3's .go-version names a Go 1.24: every step runs in that exact toolchain, and the
    // artifact's own check (built with the upstream Go stamped in) passes when it runs.
    let out = world.dir.path().join("artifacts-1.28.3");
    let lock = world.release("v1.28.3", &["--out", out.to_str().unwrap()]);
    assert_eq!(lock["release"]["new_fork_tag"], "v1.28.3-k3s1");
    assert_eq!(lock["inputs"]["go_versions"]["v1.28.1"], "1.21.13");
    assert_eq!(lock["inputs"]["go_versions"]["v1.28.3"], "1.24.11");
    assert_eq!(lock["inputs"]["toolchain"]["go"], "1.24.11");
    assert_eq!(
        lock["inputs"]["toolchain"]["go_version"],
        "go version go1.24.11 linux/amd64"
    );
    let ran = std::process::Command::new(out.join("k3s"))
        .timed_output()
        .unwrap();
    let printed = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{}", text(&ran).1);
    assert!(printed.contains("golang go1.24.11"), "{printed}");
    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.3"]);
    assert!(
        text(&output)
            .0
            .lines()
            .filter(|l| l.contains(" cached "))
            .count()
            == 8
    );
    // The toolchain images (Go 1.22.10, then 1.24.11) were found, not rebuilt.
    assert_eq!(
        kiln::image::list_toolchains(docker.sandbox.engine())
            .await
            .unwrap(),
        toolchain_before
    );
}

#[tokio::test]
async fn bad_inputs_get_their_diagnostic_and_change_nothing() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let refs = world.refs();
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
            vec!["--old", "v1.28.1", "--new", "v1.28.7"],
            "upstream has no tag v1.28.7",
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
                "k3s4",
            ],
            "no release tag v1.28.1-k3s4",
        ),
    ] {
        let mut full = vec!["release"];
        full.extend(args.iter().copied());
        let output = world.kiln(&full);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            text(&output).1.contains(expected),
            "{args:?}: {}",
            text(&output).1
        );
        assert_eq!(world.records(), 0, "{args:?} recorded a step");
        assert!(
            !world.store().join("store-v1/git").exists(),
            "{args:?} cloned a mirror"
        );
    }
    assert_eq!(world.refs(), refs);
}

#[tokio::test]
async fn a_rebase_conflict_names_the_paths_and_records_nothing() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    // Upstream v1.28.4 changes the line the k3s patch changes.
    let work = world.dir.path().join("upstream-work");
    git(
        world.dir.path(),
        &[
            "clone",
            "--quiet",
            world.path().join("upstream.git").to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "--quiet", "v1.28.3"]);
    let config = work.join("staging/src/k8s.io/client-go/rest/config.go");
    let text_before = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text_before.replace("DefaultQPS float32 = 5.0", "DefaultQPS float32 = 20.0"),
    )
    .unwrap();
    git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@kiln.invalid",
            "commit",
            "--quiet",
            "-am",
            "Raise QPS upstream",
        ],
    );
    git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@kiln.invalid",
            "tag",
            "-a",
            "-m",
            "v1.28.4",
            "v1.28.4",
        ],
    );
    git(&work, &["push", "--quiet", "origin", "v1.28.4"]);
    let refs = world.refs();

    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.4"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(stderr.contains("conflicting paths"), "{stderr}");
    assert!(
        stderr.contains("staging/src/k8s.io/client-go/rest/config.go"),
        "{stderr}"
    );
    assert_eq!(world.refs(), refs);
    let records: Vec<String> = std::fs::read_dir(world.store().join("store-v1/records"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        records.iter().all(|r| !r.contains("\"name\": \"rebase\"")),
        "a failed rebase was recorded"
    );
}

#[tokio::test]
async fn a_published_tag_at_another_commit_is_refused() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let fork = world.path().join("fork.git");
    git(&fork, &["tag", "v1.28.2-k3s1", "v1.28.2^{commit}"]);
    let refs = world.refs();
    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains("the fork already has v1.28.2-k3s1 at"),
        "{stderr}"
    );
    assert!(stderr.contains("--new-suffix k3s2"), "{stderr}");
    assert!(
        !world
            .path()
            .join("lockfiles/v1.28.2-k3s1.lock.json")
            .exists()
    );
    assert_eq!(world.refs(), refs);
}

#[tokio::test]
async fn into_adds_the_results_and_never_moves_a_ref() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    // A k3s branch of the new release's name already exists, elsewhere: it must not move.
    let k3s = world.path().join("k3s.git");
    git(&k3s, &["branch", "v1.28.2-k3s1", "main"]);
    let before = git(&k3s, &["rev-parse", "v1.28.2-k3s1"]);
    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2", "--into"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("cannot add the results to"),
        "{}",
        text(&output).1
    );
    assert_eq!(git(&k3s, &["rev-parse", "v1.28.2-k3s1"]), before);

    git(&k3s, &["branch", "-D", "v1.28.2-k3s1"]);
    let lock = world.release("v1.28.2", &["--into"]);
    let fork = world.path().join("fork.git");
    for (tag, commit) in lock["tags"].as_object().unwrap() {
        assert_eq!(
            git(&fork, &["rev-parse", &format!("{tag}^{{commit}}")]).trim(),
            commit.as_str().unwrap(),
            "{tag}"
        );
    }
    assert_eq!(
        git(&k3s, &["rev-parse", "v1.28.2-k3s1"]).trim(),
        lock["k3s"]["commit"].as_str().unwrap()
    );
    // Again: nothing to add, nothing moves.
    let refs = world.refs();
    world.release("v1.28.2", &["--into"]);
    assert_eq!(world.refs(), refs);
}
