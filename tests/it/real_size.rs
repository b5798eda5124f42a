//! Kubernetes' size and shape: deep history, years of fork tags, and a GitHub-like upstream
//! carrying `refs/pull/N/{head,merge}`. The small cases run in the test command; the real size
//! (`kiln demo init --real-size`) is ignored unless asked for (`-- --ignored real_size`).

use crate::common::{World, docker_or_skip, git, text};

/// Every git mirror in `store` (bare repositories under its `git/`).
fn mirrors(store: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![store.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if path.extension().is_some_and(|e| e == "git") && path.join("HEAD").is_file() {
                found.push(path);
            } else {
                dirs.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Points kiln.toml's `upstream` at `file://` (git's transport, as for a network remote:
/// only what is fetched arrives, unlike a local clone's copy of the object directory), and
/// names a captain's email.
fn upstream_over_transport(world: &World) -> String {
    let toml_path = world.path().join("kiln.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    let url = format!("file://{}", world.path().join("upstream.git").display());
    let edited = toml.replacen(
        "upstream = \"upstream.git\"",
        &format!("upstream = \"{url}\""),
        1,
    );
    assert_ne!(toml, edited);
    // A remote repository needs a captain's own email, not the demo's placeholder.
    let edited = edited.replacen(
        "email = \"captain@kiln-demo.invalid\"",
        "email = \"captain@example.com\"",
        1,
    );
    std::fs::write(&toml_path, edited).unwrap();
    url
}

#[tokio::test]
async fn pull_refs_are_never_fetched_and_deep_history_and_old_fork_tags_release() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::with_demo_args(&[
        "--history",
        "3000",
        "--pull-refs",
        "300",
        "--past-releases",
        "40",
    ]);
    let upstream = world.path().join("upstream.git");
    let fork = world.path().join("fork.git");
    let pulls = git(
        &upstream,
        &["for-each-ref", "--format=%(refname)", "refs/pull/"],
    );
    assert_eq!(pulls.lines().count(), 600);
    let pr_commit = git(&upstream, &["rev-parse", "refs/pull/300/head"]);
    assert!(
        git(&upstream, &["rev-list", "--count", "v1.28.2"])
            .trim()
            .parse::<u32>()
            .unwrap()
            > 3000
    );
    let old_tags = git(&fork, &["tag", "--list", "v1.2[0-7].*"]);
    assert_eq!(old_tags.lines().count(), 40, "{old_tags}");
    upstream_over_transport(&world);

    let lock = world.release("v1.28.2", &[]);
    assert!(lock["tags"]["v1.28.2-k3s1"].is_string(), "{lock}");

    // Not a ref, not an object: the pull requests never reached the store.
    let found = mirrors(&world.store());
    assert!(found.len() >= 3, "{found:?}");
    for mirror in &found {
        let refs = git(mirror, &["for-each-ref", "--format=%(refname)"]);
        assert!(
            refs.lines()
                .all(|r| r.starts_with("refs/heads/") || r.starts_with("refs/tags/")),
            "{}: {refs}",
            mirror.display()
        );
        let has_pr = std::process::Command::new("git")
            .args([
                "-C",
                mirror.to_str().unwrap(),
                "cat-file",
                "-e",
                pr_commit.trim(),
            ])
            .output()
            .unwrap();
        assert!(
            !has_pr.status.success(),
            "{} has a PR commit",
            mirror.display()
        );
    }
    // The fork's years of tags came along (its mirror has them all).
    let fork_mirror_tags = found
        .iter()
        .map(|m| git(m, &["tag", "--list", "v1.2[0-7].*"]).lines().count())
        .max()
        .unwrap();
    assert_eq!(fork_mirror_tags, 40);
    // One object store: the fork's mirror borrows the upstream mirror's objects and holds only
    // its own (k3s patches, stamps, tags).
    let own = |m: &std::path::Path| -> u64 {
        git(m, &["count-objects", "-v"])
            .lines()
            .filter_map(|l| l.strip_prefix("count: ").or(l.strip_prefix("in-pack: ")))
            .map(|n| n.parse::<u64>().unwrap())
            .sum()
    };
    let fork_mirror = found
        .iter()
        .find(|m| git(m, &["tag", "--list", "v1.2[0-7].*"]).lines().count() == 40)
        .unwrap();
    let alternates = std::fs::read_to_string(fork_mirror.join("objects/info/alternates")).unwrap();
    let lender = found
        .iter()
        .find(|m| alternates.trim() == m.join("objects").to_string_lossy())
        .unwrap_or_else(|| panic!("the fork mirror borrows from {alternates}"));
    assert!(
        own(fork_mirror) * 10 < own(lender),
        "fork {} objects, upstream {}",
        own(fork_mirror),
        own(lender)
    );

    // GitHub moves on: another pull request. The next release fetches into the same mirrors,
    // and still takes no pull ref.
    git(&upstream, &["update-ref", "refs/pull/301/head", "v1.28.3"]);
    let output = world.kiln(&["release", "--old", "v1.28.1", "--new", "v1.28.2"]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(mirrors(&world.store()), found);
    for mirror in &found {
        let refs = git(
            mirror,
            &["for-each-ref", "--format=%(refname)", "refs/pull/"],
        );
        assert!(refs.is_empty(), "{}: {refs}", mirror.display());
    }
}

/// The real size: about 25,000 files, 100,000 commits before 1.28, 20,000 pull requests and
/// 300 past fork releases. Minutes to generate and release, so only when asked:
/// `cargo test --test it -- --ignored real_size` (see docs/benchmarks.md).
#[tokio::test]
#[ignore = "long-running: a real-sized world; run with --ignored real_size"]
async fn a_real_sized_world_releases_and_verifies() {
    let Some(_docker) = docker_or_skip().await else {
        return;
    };
    let world = World::with_demo_args(&["--real-size"]);
    upstream_over_transport(&world);
    let lock = world.release("v1.28.2", &[]);
    let tags = lock["tags"].as_object().unwrap();
    assert_eq!(tags.len(), 31, "{tags:?}");
    let output = world.kiln(&[
        "verify",
        "lockfiles/v1.28.2-k3s1.lock.json",
        "--steps",
        "git",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output).1);
}
