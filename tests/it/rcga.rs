//! `kiln rc` and `kiln tag rc|ga` on a k3s repository built here (no engine needed).

use crate::common::TimedOutput as _;
use std::path::Path;

use crate::common::{self, git, text};

/// A k3s repository whose release-1.28 has three commits; rc1 and rc2 of v1.28.2 tag the
/// first two.
fn k3s_repo(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("k3s");
    git(
        dir,
        &["init", "--quiet", "--initial-branch=release-1.28", "k3s"],
    );
    for (i, rc) in [Some("v1.28.2-rc1+k3s1"), Some("v1.28.2-rc2+k3s1"), None]
        .iter()
        .enumerate()
    {
        std::fs::write(repo.join("file"), format!("{i}\n")).unwrap();
        git(&repo, &["add", "file"]);
        let date = format!("@{} +0000", 1_700_000_000 + i);
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(["commit", "--quiet", "-m", &format!("commit {i}")])
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .timed_output()
            .unwrap();
        assert!(output.status.success());
        if let Some(rc) = rc {
            git(&repo, &["tag", rc]);
        }
    }
    repo
}

/// Commits what is staged in `repo`.
fn commit(repo: &Path, message: &str) {
    git(
        repo,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@x",
            "commit",
            "--quiet",
            "-m",
            message,
        ],
    );
}

fn kiln(args: &[&str]) -> std::process::Output {
    common::kiln().args(args).timed_output().unwrap()
}

#[test]
fn rc_numbering_continues_after_the_highest_rc() {
    let dir = tempfile::tempdir().unwrap();
    let repo = k3s_repo(dir.path());
    let r = repo.to_str().unwrap();
    let output = kiln(&["rc", "v1.28.2", "--k3s", r]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(text(&output).0.trim(), "v1.28.2-rc3+k3s1");
    // Another suffix and another version start at rc1.
    assert_eq!(
        text(&kiln(&["rc", "v1.28.2", "--suffix", "k3s2", "--k3s", r]))
            .0
            .trim(),
        "v1.28.2-rc1+k3s2"
    );
    assert_eq!(
        text(&kiln(&["rc", "v1.28.3", "--k3s", r])).0.trim(),
        "v1.28.3-rc1+k3s1"
    );

    // Dry run changes nothing; the real run tags the branch head.
    let before = git(&repo, &["for-each-ref"]);
    let output = kiln(&["tag", "rc", "v1.28.2", "--k3s", r, "--dry-run"]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert!(text(&output).0.contains("would create v1.28.2-rc3+k3s1"));
    assert_eq!(git(&repo, &["for-each-ref"]), before);
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &["clone", "--quiet", "--bare", r, remote.to_str().unwrap()],
    );
    let output = kiln(&[
        "tag",
        "rc",
        "v1.28.2",
        "--k3s",
        r,
        "--remote",
        remote.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output).1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["tag"], "v1.28.2-rc3+k3s1");
    assert_eq!(report["image_tag"], "v1.28.2-rc3-k3s1");
    let head = git(&repo, &["rev-parse", "release-1.28"]);
    assert_eq!(git(&repo, &["rev-parse", "v1.28.2-rc3+k3s1"]), head);
    assert_eq!(git(&remote, &["rev-parse", "v1.28.2-rc3+k3s1"]), head);
    // The same head cannot be another RC.
    let output = kiln(&["tag", "rc", "v1.28.2", "--k3s", r]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("is already v1.28.2-rc3+k3s1"),
        "{}",
        text(&output).1
    );
}

#[test]
fn ga_needs_an_rc_and_never_moves() {
    let dir = tempfile::tempdir().unwrap();
    let repo = k3s_repo(dir.path());
    let r = repo.to_str().unwrap();
    // No RC of v1.28.3: refused, nothing created.
    let before = git(&repo, &["for-each-ref"]);
    let output = kiln(&["tag", "ga", "v1.28.3", "--k3s", r]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("needs a release candidate first"),
        "{}",
        text(&output).1
    );
    assert_eq!(git(&repo, &["for-each-ref"]), before);

    // With RCs: the GA tag on the head; again: nothing to do.
    let output = kiln(&["tag", "ga", "v1.28.2", "--k3s", r]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert!(
        text(&output).0.contains("created v1.28.2+k3s1"),
        "{}",
        text(&output).0
    );
    let output = kiln(&["tag", "ga", "v1.28.2", "--k3s", r]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert!(
        text(&output).0.contains("exists v1.28.2+k3s1"),
        "{}",
        text(&output).0
    );

    // A new commit on the branch: the GA tag would have to move, so it is refused.
    std::fs::write(repo.join("file"), "later\n").unwrap();
    git(&repo, &["add", "file"]);
    commit(&repo, "later");
    let tagged = git(&repo, &["rev-parse", "v1.28.2+k3s1"]);
    let output = kiln(&["tag", "ga", "v1.28.2", "--k3s", r]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("already exists at"),
        "{}",
        text(&output).1
    );
    assert_eq!(git(&repo, &["rev-parse", "v1.28.2+k3s1"]), tagged);

    // A remote that has the GA elsewhere: refused before anything is created locally.
    let fresh = k3s_repo(&dir.path().join("second").tap_mkdir());
    std::fs::write(fresh.join("file"), "elsewhere\n").unwrap();
    git(&fresh, &["add", "file"]);
    commit(&fresh, "other");
    let remote = dir.path().join("remote.git");
    git(
        dir.path(),
        &["clone", "--quiet", "--bare", r, remote.to_str().unwrap()],
    );
    let output = kiln(&[
        "tag",
        "ga",
        "v1.28.2",
        "--k3s",
        fresh.to_str().unwrap(),
        "--remote",
        remote.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("already has v1.28.2+k3s1"),
        "{}",
        text(&output).1
    );
    assert!(!git(&fresh, &["tag"]).contains("v1.28.2+k3s1"));
}

trait MkDir {
    fn tap_mkdir(self) -> Self;
}

impl MkDir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn set_stable_changes_one_line_and_refuses_non_ga() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("channel.yaml");
    let original = "# Channels for the k3s upgrade controller.\nchannels:\n  - name: stable\n    latest: v1.28.1+k3s1\n  - name: latest\n    latestRegexp: .*\n    excludeRegexp: ^[^+]+-\n  - name: v1.28\n    latestRegexp: v1\\.28\\..*\n";
    std::fs::write(&file, original).unwrap();
    let f = file.to_str().unwrap();
    let output = kiln(&["channel", "set-stable", "v1.28.2-rc1+k3s1", "--file", f]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains("is not a GA k3s version"),
        "{}",
        text(&output).1
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);

    let output = kiln(&["channel", "set-stable", "v1.28.2+k3s1", "--file", f]);
    assert!(output.status.success(), "{}", text(&output).1);
    let changed = std::fs::read_to_string(&file).unwrap();
    let diff: Vec<(&str, &str)> = original
        .lines()
        .zip(changed.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        diff,
        [("    latest: v1.28.1+k3s1", "    latest: v1.28.2+k3s1")]
    );
    assert_eq!(original.len(), changed.len());
    let output = kiln(&["channel", "set-stable", "v1.28.2+k3s1", "--file", f]);
    assert!(text(&output).0.contains("already"), "{}", text(&output).0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), changed);
}

/// Row 2's last crash point, on the write every user file of kiln's goes through (lockfiles,
/// go.mod edits, KDM and channel files): killed after the new bytes are synced and before
/// the rename, the file is the old one, whole; the next write completes.
#[cfg(feature = "failpoints")]
#[test]
fn a_write_killed_before_its_rename_leaves_the_old_file_whole() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("channel.yaml");
    let original = "channels:\n  - name: stable\n    latest: v1.28.1+k3s1\n";
    std::fs::write(&file, original).unwrap();
    let f = file.to_str().unwrap();
    let output = crate::common::kiln()
        .env("KILN_FAILPOINT", "before-rename")
        .args(["channel", "set-stable", "v1.28.2+k3s1", "--file", f])
        .timed_output()
        .unwrap();
    assert_eq!(output.status.signal(), Some(9), "{}", text(&output).1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), original);
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names().len(), 2, "the killed write's temporary file");
    // A minute later it is a dead writer's, not a slow live one's.
    for name in names().iter().filter(|n| n.starts_with(".kiln-write-")) {
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(name))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120))
            .unwrap();
    }
    let output = kiln(&["channel", "set-stable", "v1.28.2+k3s1", "--file", f]);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        original.replace("v1.28.1", "v1.28.2")
    );
    assert_eq!(names(), ["channel.yaml"], "the next write removed it");
}
