//! The tag step for every shape of the fork's tag.sh: one that builds through hack/ with rsync,
//! talks while it works and makes annotated tags; one that commits nothing and tags the patch
//! head itself. Each release is checked by `kiln verify --steps git` (a fresh store, fresh
//! caches: the same tags, bundles and outputs).

use crate::common::{World, docker_or_skip, git, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// `kiln verify --steps git` of the world's lockfile passes.
fn verifies(world: &World) {
    let output = world.kiln(&["verify", LOCK, "--steps", "git"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
}

/// A bare clone of upstream beside the world with the tags of the release `lock` fetched from
/// its tag bundle in the store.
fn tagged_clone(world: &World, lock: &serde_json::Value) -> std::path::PathBuf {
    let bundle = world.blob(
        lock["steps"]["tag"]["outputs"]["tag.bundle"]
            .as_str()
            .unwrap(),
    );
    let clone = world.clone_repo("upstream.git", "tagged", true);
    git(
        &clone,
        &[
            "fetch",
            "--quiet",
            bundle.to_str().unwrap(),
            "refs/tags/*:refs/tags/*",
        ],
    );
    clone
}

#[tokio::test]
async fn a_talking_tag_sh_with_annotated_tags_gives_the_push_lines_and_peeled_tags() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::with_demo_args(&["--tag-sh", "hack"]);
    let fork = world.path().join("fork.git");
    // The old release was cut by the same tag.sh: its tags are tag objects.
    assert_eq!(
        git(&fork, &["cat-file", "-t", "v1.28.1-k3s1"]).trim(),
        "tag"
    );
    let output = world.kiln(&[
        "release", "--old", "v1.28.1", "--new", "v1.28.2", "--json", "--logs",
    ]);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    let lock: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The running step shows what tag.sh is doing (its build, through hack/), as it prints it
    // (on a terminal, the step's latest line; --logs, every line).
    assert!(
        stderr.contains("tag | +++ [hack] Building go targets")
            && stderr.contains("tag | +++ [tag.sh] stamping"),
        "{stderr}"
    );

    // 1 + N tags, each peeled to the one stamp commit, each with its tag object recorded.
    let tags = lock["tags"].as_object().unwrap();
    let modules = git(
        &fork,
        &["ls-tree", "--name-only", "v1.28.1-k3s1:staging/src/k8s.io/"],
    )
    .lines()
    .count();
    assert_eq!(tags.len(), 1 + modules, "{tags:?}");
    let stamp = &tags["v1.28.2-k3s1"];
    assert!(tags.values().all(|c| c == stamp), "{tags:?}");
    let objects = lock["tag_objects"].as_object().unwrap();
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        tags.keys().collect::<Vec<_>>()
    );

    // The push output holds tag.sh's `git push` lines only, none of its chatter.
    let push = std::fs::read_to_string(
        world.blob(lock["steps"]["tag"]["outputs"]["push"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(push.lines().count(), tags.len(), "{push}");
    for tag in tags.keys() {
        assert!(
            push.contains(&format!("git push ${{REMOTE}} {tag}\n")),
            "{push}"
        );
    }
    assert!(!push.contains("+++"), "{push}");

    // The tag bundle carries the tag objects: a clone of it has annotated tags.
    let clone = tagged_clone(&world, &lock);
    assert_eq!(
        git(&clone, &["cat-file", "-t", "v1.28.2-k3s1"]).trim(),
        "tag"
    );
    // Every recorded object is that tag's tag object, peeling to the recorded commit.
    for (tag, object) in objects {
        assert_eq!(
            git(&clone, &["rev-parse", &format!("refs/tags/{tag}")]).trim(),
            object.as_str().unwrap()
        );
        assert_eq!(
            git(&clone, &["cat-file", "-t", object.as_str().unwrap()]).trim(),
            "tag"
        );
        assert_eq!(
            git(&clone, &["rev-parse", &format!("{tag}^{{commit}}")]).trim(),
            stamp.as_str().unwrap()
        );
    }

    verifies(&world);
}

#[tokio::test]
async fn a_tag_sh_that_tags_the_patch_head_keeps_every_patch() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::with_demo_args(&["--tag-sh", "no-stamp"]);
    let fork = world.path().join("fork.git");
    let old_tag = git(&fork, &["rev-parse", "v1.28.1-k3s1^{commit}"]);
    assert_eq!(
        git(&fork, &["log", "-1", "--format=%s", "v1.28.1-k3s1"]).trim(),
        "Raise the default client rate limit for embedded use"
    );
    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2", "--json"]);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("is not on a stamp commit"), "{stderr}");
    let lock: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // Both patches are carried, the last one the old tag's own commit.
    let patches: Vec<&str> = lock["inputs"]["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert_eq!(patches[1], old_tag.trim());

    // The new tag sits on the rebased last patch (no stamp commit), whose change it carries.
    let clone = tagged_clone(&world, &lock);
    assert_eq!(
        git(&clone, &["log", "-1", "--format=%s", "v1.28.2-k3s1"]).trim(),
        "Raise the default client rate limit for embedded use"
    );
    assert!(
        git(
            &clone,
            &[
                "show",
                "v1.28.2-k3s1:staging/src/k8s.io/client-go/rest/config.go"
            ]
        )
        .contains("DefaultQPS float32 = 50.0")
    );
    assert_eq!(
        git(&clone, &["rev-list", "--count", "v1.28.2..v1.28.2-k3s1"]).trim(),
        "2"
    );

    verifies(&world);
}

/// The k3s branch: release-X.Y when k3s has it (the default world's lockfile says so), else
/// k3s's default branch (the newest minor is released from `main`), printed and locked; a
/// branch asked for that k3s lacks is named.
#[tokio::test]
async fn the_newest_minor_is_branched_from_main_and_the_choice_is_locked() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // k3s's 1.28 line lives on main: no release-1.28.
    let world = World::with_demo_args(&["--k3s-main"]);
    let k3s = world.path().join("k3s.git");
    assert_eq!(
        git(
            &k3s,
            &["for-each-ref", "--format=%(refname)", "refs/heads/"]
        )
        .trim(),
        "refs/heads/main"
    );

    let output = world.kiln(&[
        "release",
        "--old",
        "v1.28.1",
        "--new",
        "v1.28.2",
        "--k3s-branch",
        "release-9.9",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("k3s has no branch release-9.9"),
        "{}",
        text(&output).1
    );

    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("k3s has no branch release-1.28: branching from its default branch main"),
        "{stderr}"
    );
    assert!(stdout.contains("on main"), "{stdout}");
    let lock: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(world.path().join(LOCK)).unwrap()).unwrap();
    assert_eq!(lock["inputs"]["k3s_branch"], "main");
    assert_eq!(
        lock["inputs"]["k3s_release_branch_commit"]
            .as_str()
            .unwrap(),
        git(&k3s, &["rev-parse", "refs/heads/main"]).trim()
    );
    verifies(&world);

    // `kiln tag` tags the head of the branch such a release is merged into: main here.
    let output = world.kiln(&[
        "tag",
        "rc",
        "v1.28.2",
        "--k3s",
        k3s.to_str().unwrap(),
        "--dry-run",
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output).1);
    let planned: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(planned["branch"], "main", "{planned}");
    assert_eq!(
        planned["commit"].as_str().unwrap(),
        git(&k3s, &["rev-parse", "refs/heads/main"]).trim()
    );

    // The committed demo lockfile, from the default world, was branched from release-1.28.
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(LOCK))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(committed["inputs"]["k3s_branch"], "release-1.28");
}

/// Who the commits are by: needed before anything is read, from flags or kiln.toml; the
/// placeholder email only against local repositories.
#[test]
fn a_release_needs_an_identity_and_a_remote_one_a_real_email() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::write(
        dir.path().join("kiln.toml"),
        "[repos]\nupstream = \"u.git\"\nfork = \"f.git\"\nk3s = \"k.git\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        crate::common::kiln()
            .current_dir(dir.path())
            .arg("--store")
            .arg(&store)
            .args(["release", "--old", "v1.28.1", "--new", "v1.28.2"])
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains("needs to know who the release's commits are by")
            && stderr.contains("--name and --email"),
        "{stderr}"
    );
    let output = run(&[
        "--name",
        "K3s Release Captain",
        "--email",
        "captain@kiln-demo.invalid",
        "--k3s",
        "https://github.com/k3s-io/k3s.git",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains("is a placeholder (.invalid)")
            && stderr.contains("https://github.com/k3s-io/k3s.git"),
        "{stderr}"
    );
    let output = run(&["--name", "A <b>", "--email", "a@example.com"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("is not usable in a git identity"),
        "{}",
        text(&output).1
    );
    // Nothing was read or made: no store.
    assert!(!store.exists());

    // A lockfile made as the placeholder (the committed demo one) is pushed only to local
    // repositories: a remote is refused before git is asked anything.
    let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(LOCK);
    let output = crate::common::kiln()
        .current_dir(dir.path())
        .arg("--store")
        .arg(&store)
        .args(["push", committed.to_str().unwrap()])
        .args(["--remote", "https://github.com/k3s-io/kubernetes.git"])
        .output()
        .unwrap();
    let stderr = text(&output).1;
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`captain@kiln-demo.invalid` is a placeholder (.invalid)")
            && stderr.contains("https://github.com/k3s-io/kubernetes.git is not local"),
        "{stderr}"
    );
    assert!(!store.exists());
}

#[tokio::test]
async fn the_tag_step_builds_a_workspace_upstream_from_its_vendor_tree_offline() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    // v1.28.2 (Go 1.22) is a workspace: go.work, vendor/ as `go work vendor` writes it, no
    // vendor/k8s.io links. Go refuses -mod=mod there and needs no download: tag.sh's builds
    // pass only if the tag step leaves the tree's own choices alone, offline.
    let world = World::with_demo_args(&["--go-work", "--tag-sh", "hack"]);
    let upstream = world.path().join("upstream.git");
    assert!(
        git(&upstream, &["ls-tree", "--name-only", "v1.28.1"])
            .lines()
            .all(|f| f != "go.work")
    );
    assert!(git(&upstream, &["show", "v1.28.2:vendor/modules.txt"]).starts_with("## workspace\n"));
    let lock = world.release("v1.28.2", &[]);

    let tags = lock["tags"].as_object().unwrap();
    let modules = git(
        &upstream,
        &["ls-tree", "--name-only", "v1.28.2:staging/src/k8s.io/"],
    )
    .lines()
    .count();
    assert_eq!(tags.len(), 1 + modules, "{tags:?}");
    assert_eq!(lock["tag_objects"].as_object().unwrap().len(), tags.len());

    // The tagged tree is still the workspace, stamped.
    let clone = tagged_clone(&world, &lock);
    let files = git(&clone, &["ls-tree", "--name-only", "v1.28.2-k3s1"]);
    assert!(files.lines().any(|f| f == "go.work"), "{files}");
    assert!(
        git(
            &clone,
            &[
                "show",
                "v1.28.2-k3s1:staging/src/k8s.io/component-base/version/base.go"
            ]
        )
        .contains("\"v1.28.2-k3s1\"")
    );

    verifies(&world);
}

/// A patch the new upstream tag already has becomes empty in the rebase, and git drops it:
/// the release says which, by title, and how many of the old release's patches it carried.
#[tokio::test]
async fn a_patch_upstream_took_is_reported_as_not_carried() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::new();
    let upstream = world.path().join("upstream.git");
    let work = world.clone_repo("fork.git", "fork-work", false);
    let commit = |message: &str, time: &str| {
        git(
            &work,
            &[
                "-c",
                "user.name=K3s Developer",
                "-c",
                "user.email=dev@kiln-demo.invalid",
                "commit",
                "--quiet",
                "-am",
                message,
                &format!("--date=@{time}"),
            ],
        );
    };
    // v1.28.1-k3s2: the old patches, a backport of what v1.28.2 then shipped, a stamp.
    git(
        &work,
        &["checkout", "--quiet", "--detach", "v1.28.1-k3s1~1"],
    );
    let changelog = git(&upstream, &["show", "v1.28.2:CHANGELOG/CHANGELOG-1.28.md"]);
    std::fs::write(work.join("CHANGELOG/CHANGELOG-1.28.md"), changelog).unwrap();
    commit("Backport the v1.28.2 changelog", "1693000000");
    for file in [
        "staging/src/k8s.io/client-go/pkg/version/base.go",
        "staging/src/k8s.io/component-base/version/base.go",
    ] {
        let path = work.join(file);
        let mut body = std::fs::read_to_string(&path).unwrap();
        body.push_str("\n// Stamped v1.28.1-k3s2.\n");
        std::fs::write(&path, body).unwrap();
    }
    commit("v1.28.1-k3s2", "1693000600");
    git(&work, &["tag", "v1.28.1-k3s2"]);
    git(&work, &["push", "--quiet", "origin", "v1.28.1-k3s2"]);
    // k3s moved to it.
    let k3s = world.clone_repo("k3s.git", "k3s-work", false);
    git(&k3s, &["checkout", "--quiet", "release-1.28"]);
    let go_mod = std::fs::read_to_string(k3s.join("go.mod")).unwrap();
    std::fs::write(
        k3s.join("go.mod"),
        go_mod.replace("v1.28.1-k3s1", "v1.28.1-k3s2"),
    )
    .unwrap();
    git(
        &k3s,
        &[
            "-c",
            "user.name=K3s Developer",
            "-c",
            "user.email=dev@kiln-demo.invalid",
            "commit",
            "--quiet",
            "-am",
            "Update to v1.28.1-k3s2",
            "--date=@1693001200",
        ],
    );
    git(&k3s, &["push", "--quiet", "origin", "release-1.28"]);

    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2", "--json"]);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("carried 2 of the old release's 3 patches")
            && stderr.contains("Backport the v1.28.2 changelog"),
        "{stderr}"
    );
    let lock: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(lock["release"]["old_fork_tag"], "v1.28.1-k3s2", "{lock}");
    assert_eq!(lock["inputs"]["patches"].as_array().unwrap().len(), 3);
}
