//! `kiln verify-tags` and `kiln push` against bare remotes, on a real demo release.

use std::path::{Path, PathBuf};

use crate::common::{World, docker_or_skip, git, text};

const LOCK: &str = "lockfiles/v1.28.2-k3s1.lock.json";

/// A released demo world and its lockfile.
fn released() -> (World, serde_json::Value) {
    let world = World::new();
    let lock = world.release("v1.28.2", &[]);
    (world, lock)
}

/// A bare copy of one of the world's repositories, as a remote.
fn remote(world: &World, repo: &str, name: &str) -> PathBuf {
    world.clone_repo(repo, name, true)
}

fn verify_tags(world: &World, remote: &Path) -> (Option<i32>, serde_json::Value) {
    let output = world.kiln(&[
        "verify-tags",
        LOCK,
        "--remote",
        remote.to_str().unwrap(),
        "--json",
    ]);
    let json = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&output).1));
    (output.status.code(), json)
}

fn state_of(report: &serde_json::Value, tag: &str) -> Option<String> {
    report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tag)
        .map(|t| t["state"].as_str().unwrap().to_owned())
}

fn push(world: &World, fork: &Path, k3s: Option<&Path>) -> std::process::Output {
    let mut args = vec!["push", LOCK, "--remote", fork.to_str().unwrap()];
    if let Some(k3s) = k3s {
        args.extend(["--k3s-remote", k3s.to_str().unwrap()]);
    }
    world.kiln(&args)
}

fn tags_of(repo: &Path) -> String {
    git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

#[tokio::test]
async fn verify_tags_reports_missing_extra_moved_and_unsafe_names() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (world, lock) = released();
    let fork = remote(&world, "fork.git", "fork-remote.git");
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(report["counts"]["missing"], 7, "{report}");

    // A relative remote path means the same to push as to the captain's shell.
    let output = world.kiln(&["push", LOCK, "--remote", "../fork-remote.git"]);
    assert!(output.status.success(), "{}", text(&output).1);
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["counts"]["present"], 7, "{report}");

    // Missing: one module tag deleted.
    let api = "staging/src/k8s.io/api/v1.28.2-k3s1";
    git(&fork, &["tag", "-d", api]);
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(4), "{report}");
    assert_eq!(state_of(&report, api).as_deref(), Some("missing"));

    // Moved: back, at another commit (annotated, so peeling is exercised too).
    git(
        &fork,
        &[
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "tag",
            "-a",
            "-m",
            "moved",
            api,
            "v1.28.2^{commit}",
        ],
    );
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(5), "{report}");
    assert_eq!(state_of(&report, api).as_deref(), Some("moved"));
    let other = git(&fork, &["rev-parse", "v1.28.2^{commit}"]);
    let moved = report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == api)
        .unwrap();
    assert_eq!(moved["remote"], other.trim());
    assert_eq!(moved["locked"], lock["tags"][api]);
    git(&fork, &["tag", "-d", api]);
    git(&fork, &["tag", api, lock["tags"][api].as_str().unwrap()]);

    // Extra: a tag of the release the lock does not have.
    let extra = "staging/src/k8s.io/extra/v1.28.2-k3s1";
    git(&fork, &["tag", extra, "v1.28.2^{commit}"]);
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(5), "{report}");
    assert_eq!(state_of(&report, extra).as_deref(), Some("extra"));
    git(&fork, &["tag", "-d", extra]);

    // A remote tag whose name a shell would execute: reported, never run.
    let evil = "x$(touch${IFS}pwned)`touch${IFS}pwned2`/v1.28.2-k3s1";
    git(
        &fork,
        &[
            "update-ref",
            &format!("refs/tags/{evil}"),
            "v1.28.2^{commit}",
        ],
    );
    // And one a command would take for an option.
    let dashed = "-evil/v1.28.2-k3s1";
    git(
        &fork,
        &[
            "update-ref",
            &format!("refs/tags/{dashed}"),
            "v1.28.2^{commit}",
        ],
    );
    let (code, report) = verify_tags(&world, &fork);
    assert_eq!(code, Some(5), "{report}");
    assert_eq!(state_of(&report, evil).as_deref(), Some("unsafe"));
    assert_eq!(state_of(&report, dashed).as_deref(), Some("unsafe"));
    // Push refuses it too, and nothing anywhere ran it.
    let output = push(&world, &fork, None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("never passes to a command"),
        "{}",
        text(&output).1
    );
    for dir in [world.path(), fork.clone(), world.dir.path().to_owned()] {
        assert!(!dir.join("pwned").exists() && !dir.join("pwned2").exists());
    }
    // The human table says what to do.
    let output = world.kiln(&["verify-tags", LOCK, "--remote", fork.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(5));
    assert!(
        text(&output).0.contains("UNSAFE NAME"),
        "{}",
        text(&output).0
    );
}

#[tokio::test]
async fn push_is_atomic_idempotent_and_never_moves_a_tag() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let (world, lock) = released();

    // A remote with one of the release's tags already elsewhere: refused, nothing pushed to
    // either remote.
    let taken = remote(&world, "fork.git", "taken.git");
    let k3s_untouched = remote(&world, "k3s.git", "k3s-untouched.git");
    let kubectl = "staging/src/k8s.io/kubectl/v1.28.2-k3s1";
    git(&taken, &["tag", kubectl, "v1.28.2^{commit}"]);
    let (before, k3s_before) = (tags_of(&taken), tags_of(&k3s_untouched));
    let output = push(&world, &taken, Some(&k3s_untouched));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(stderr.contains("refusing to push"), "{stderr}");
    assert!(stderr.contains(kubectl), "{stderr}");
    assert_eq!(tags_of(&taken), before);
    assert_eq!(tags_of(&k3s_untouched), k3s_before);

    // A remote whose hook rejects one tag: the atomic push leaves it without any of them.
    let hooked = remote(&world, "fork.git", "hooked.git");
    let hook = hooked.join("hooks/update");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in refs/tags/staging/src/k8s.io/kubectl/*) echo 'kubectl tags are frozen' >&2; exit 1;; esac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = tags_of(&hooked);
    let output = push(&world, &hooked, None);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("kubectl tags are frozen"),
        "{}",
        text(&output).1
    );
    assert_eq!(tags_of(&hooked), before);

    // The k3s bundle gone from the store: refused before the fork's tags are pushed.
    let bundle = world.blob(
        lock["steps"]["k3s-tidy"]["outputs"]["k3s.bundle"]
            .as_str()
            .unwrap(),
    );
    let saved = std::fs::read(&bundle).unwrap();
    std::fs::remove_file(&bundle).unwrap();
    let (early, early_k3s) = (
        remote(&world, "fork.git", "early.git"),
        remote(&world, "k3s.git", "early-k3s.git"),
    );
    let (before, k3s_before) = (tags_of(&early), tags_of(&early_k3s));
    let output = push(&world, &early, Some(&early_k3s));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("is not in the store"),
        "{}",
        text(&output).1
    );
    assert!(
        text(&output).1.contains("kiln release"),
        "{}",
        text(&output).1
    );
    assert_eq!((tags_of(&early), tags_of(&early_k3s)), (before, k3s_before));
    std::fs::write(&bundle, saved).unwrap();

    // A good remote: every tag lands at its locked commit, and the k3s branch.
    let fork = remote(&world, "fork.git", "fork-remote.git");
    let k3s = remote(&world, "k3s.git", "k3s-remote.git");
    let output = push(&world, &fork, Some(&k3s));
    assert!(output.status.success(), "{}", text(&output).1);
    for (tag, commit) in lock["tags"].as_object().unwrap() {
        assert_eq!(
            git(&fork, &["rev-parse", &format!("refs/tags/{tag}")]).trim(),
            commit.as_str().unwrap()
        );
    }
    assert_eq!(
        git(&k3s, &["rev-parse", "refs/heads/v1.28.2-k3s1"]).trim(),
        lock["k3s"]["commit"].as_str().unwrap()
    );
    // Again: a no-op.
    let (fork_refs, k3s_refs) = (tags_of(&fork), tags_of(&k3s));
    let output = world.kiln(&[
        "push",
        LOCK,
        "--remote",
        fork.to_str().unwrap(),
        "--k3s-remote",
        k3s.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let actions: Vec<&str> = report["fork"]
        .as_array()
        .unwrap()
        .iter()
        .chain(report["k3s"].as_array().unwrap())
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 8);
    assert!(actions.iter().all(|a| *a == "skipped"), "{actions:?}");
    assert_eq!((tags_of(&fork), tags_of(&k3s)), (fork_refs, k3s_refs));

    // The k3s branch moved on the remote: refused.
    git(
        &k3s,
        &["update-ref", "refs/heads/v1.28.2-k3s1", "refs/heads/main"],
    );
    let output = push(&world, &fork, Some(&k3s));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("branch v1.28.2-k3s1 is at"),
        "{}",
        text(&output).1
    );
}
