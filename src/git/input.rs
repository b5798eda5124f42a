//! A commit of a repository as a step's input: a fresh repository with the commit checked out,
//! detached, the tags that name it, and nothing else (no remote, no branches, no other tags).
//! Its history is shallow: the commit alone, or back to the commit the step declares (a rebase
//! reads its patches), whichever way it reaches the step — what a step sees never depends on
//! the engine. It costs its checkout, never a copy of the repository's objects: a builtin on
//! the host and a step on a local engine borrow them (git's alternates; in a container the
//! object directories are bound read-only at fixed paths); for an engine that gets copies it
//! holds only the objects it can reach.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{GitError, NEUTRAL_DIR, absolute, git, run};

/// Where the step reading an input runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// On the host (a builtin): the input borrows the repository's objects where they are.
    Host,
    /// In a container whose engine binds host directories: the input borrows the objects,
    /// bound read-only at [`OBJECTS_IN_STEP`]`/<name>`.
    Bound,
    /// In a container whose engine gets copies: the input holds its own objects.
    Copied,
}

/// Where a step's borrowed object directories are bound.
pub(crate) const OBJECTS_IN_STEP: &str = "/kiln/objects";

/// A host directory (or file) a step's container must have bound read-only for its git inputs
/// to work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectMount {
    /// On the host.
    pub(crate) source: PathBuf,
    /// In the container.
    pub(crate) target: String,
}

/// Makes `dest` (which must not exist) a repository of `commit` of `repo`, checked out (with
/// `worktree`; without, its HEAD is `commit` and no file is written: a step that reads the
/// repository through git pays no checkout). With `history_from`, the commits from that one up
/// to `commit` are there; without, `commit` alone. Returns what the container must bind
/// ([`Reach::Bound`] only).
pub(crate) fn materialize(
    repo: &Path,
    commit: &str,
    history_from: Option<&str>,
    worktree: bool,
    dest: &Path,
    reach: Reach,
) -> Result<Vec<ObjectMount>, GitError> {
    for rev in std::iter::once(commit).chain(history_from) {
        if rev.len() < 40 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GitError::BadRev {
                rev: rev.to_owned(),
            });
        }
    }
    let (repo, dest) = (absolute(repo), absolute(dest));
    let objects = objects_dir(&repo)?;
    let mut init = git(Path::new(NEUTRAL_DIR));
    // No template: no sample hooks to copy into every input (and send to a remote engine).
    init.args(["init", "--quiet", "--template=", "--end-of-options"])
        .arg(&dest);
    run(init, Path::new(NEUTRAL_DIR))?;
    // The work tree is handed to the step's user (chown: every ctime and owner changes) and,
    // on a remote engine, unpacked again (every inode changes): git is told to trust only
    // sizes and mtimes, or its first command would hash every file again.
    for (key, value) in [("core.checkStat", "minimal"), ("core.trustctime", "false")] {
        let mut config = git(&dest);
        config.args(["config", key, value]);
        run(config, &dest)?;
    }
    let own_objects = dest.join(".git/objects");
    let tags = tags_at(&repo, commit)?;
    let shallow = boundary(&repo, commit, history_from)?;
    let chain = borrowed_chain(&objects);
    // A repository whose objects a step's user may not read (the user's own, kept private)
    // is copied from instead.
    let reach = match reach {
        Reach::Bound if !chain.iter().all(|d| readable_by_all(d)) => {
            tracing::info!(
                repo = %repo.display(),
                "the repository's objects are not readable by everyone: the step gets copies"
            );
            Reach::Copied
        }
        reach => reach,
    };
    let alternates = own_objects.join("info/alternates");
    match reach {
        Reach::Host | Reach::Bound => write(&alternates, &format!("{}\n", objects.display()))?,
        Reach::Copied => copy_objects(&repo, commit, history_from, &shallow, &tags, &own_objects)?,
    }
    let text: String = shallow.iter().flat_map(|c| [c.as_str(), "\n"]).collect();
    write(&dest.join(".git/shallow"), &text)?;
    if !tags.is_empty() {
        let lines: String = tags
            .iter()
            .flat_map(|(object, name)| ["create ", name, " ", object, "\n"])
            .collect();
        with_stdin(&dest, &["update-ref", "--stdin"], lines.as_bytes())?;
    }
    let mut head = git(&dest);
    if worktree {
        head.args(["checkout", "--quiet", "--detach", commit]);
    } else {
        head.args(["update-ref", "--no-deref", "HEAD", commit]);
    }
    run(head, &dest)?;
    if reach != Reach::Bound {
        return Ok(Vec::new());
    }
    // In the container: every directory of the chain at a fixed path named by its host
    // path's digest (no host path reaches the step), listed in the input's alternates; the
    // alternates files of the borrowed directories (host paths) are masked empty.
    let mut mounts = Vec::new();
    let mut listed = String::new();
    for dir in &chain {
        let name = crate::hash::Digest::of(dir.as_os_str().as_encoded_bytes()).short();
        let target = format!("{OBJECTS_IN_STEP}/{name}");
        listed.push_str(&target);
        listed.push('\n');
        let masked = dir
            .join("info/alternates")
            .is_file()
            .then(|| format!("{target}/info/alternates"));
        mounts.push(ObjectMount {
            source: dir.clone(),
            target,
        });
        if let Some(target) = masked {
            mounts.push(ObjectMount {
                source: PathBuf::from("/dev/null"),
                target,
            });
        }
    }
    write(&alternates, &listed)?;
    Ok(mounts)
}

/// `repo`'s object directory (a bare repository's or a work tree's `.git`'s).
fn objects_dir(repo: &Path) -> Result<PathBuf, GitError> {
    let mut path = git(repo);
    path.args([
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "objects",
    ]);
    Ok(PathBuf::from(run(path, repo)?))
}

/// `objects` and every object directory it borrows from, transitively (each once).
fn borrowed_chain(objects: &Path) -> Vec<PathBuf> {
    let mut chain = vec![objects.to_owned()];
    let mut at = 0;
    while at < chain.len() {
        let file = chain[at].join("info/alternates");
        for line in std::fs::read_to_string(&file).unwrap_or_default().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let next = chain[at].join(line);
            let next = std::fs::canonicalize(&next).unwrap_or(next);
            if !chain.contains(&next) {
                chain.push(next);
            }
        }
        at += 1;
    }
    chain
}

/// Whether anyone may read the object directory `dir` (it and its `pack/`, which git makes
/// with the same permissions as the files in them).
fn readable_by_all(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    [dir.to_owned(), dir.join("pack")]
        .iter()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005))
}

/// The tags of `repo` naming `commit` (peeled): (the ref's object, the ref's name).
fn tags_at(repo: &Path, commit: &str) -> Result<Vec<(String, String)>, GitError> {
    let mut list = git(repo);
    list.args([
        "for-each-ref",
        "--format=%(objectname) %(refname)",
        &format!("--points-at={commit}"),
        "refs/tags",
    ]);
    Ok(run(list, repo)?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(o, n)| (o.to_owned(), n.to_owned()))
        .collect())
}

/// Packs into `dest_objects` the objects the input reaches: the full tree of every commit of
/// `shallow` (its parents are not there, so nothing of its tree may be left to them), the
/// commits from `history_from` to `commit` and their objects, and the tag objects naming
/// `commit`. Deltas are reused from `repo`'s packs; nothing in `repo` is written.
fn copy_objects(
    repo: &Path,
    commit: &str,
    history_from: Option<&str>,
    shallow: &BTreeSet<String>,
    tags: &[(String, String)],
    dest_objects: &Path,
) -> Result<(), GitError> {
    let mut whole: Vec<&str> = vec!["--no-walk", commit];
    whole.extend(history_from);
    whole.extend(shallow.iter().map(String::as_str));
    let mut wanted = rev_list_objects(repo, &whole)?;
    if let Some(from) = history_from {
        wanted.push_str(&rev_list_objects(repo, &[commit, "--not", from])?);
    }
    for (object, _) in tags {
        wanted.push_str(object);
        wanted.push('\n');
    }
    let base = dest_objects.join("pack/pack");
    with_stdin(
        repo,
        &[
            "pack-objects",
            "--quiet",
            "--delta-base-offset",
            &base.to_string_lossy(),
        ],
        wanted.as_bytes(),
    )
    .map(drop)
}

fn rev_list_objects(repo: &Path, revs: &[&str]) -> Result<String, GitError> {
    let mut list = git(repo);
    list.args(["rev-list", "--objects"]).args(revs);
    let mut text = run(list, repo)?;
    if !text.is_empty() {
        text.push('\n');
    }
    Ok(text)
}

/// The commits of the input whose parents it lacks: git's `shallow` list.
fn boundary(
    repo: &Path,
    commit: &str,
    history_from: Option<&str>,
) -> Result<BTreeSet<String>, GitError> {
    let Some(from) = history_from else {
        return Ok(BTreeSet::from([commit.to_owned()]));
    };
    let mut list = git(repo);
    list.args(["rev-list", "--parents", commit, "--not", from]);
    let walked = run(list, repo)?;
    let lines: Vec<Vec<&str>> = walked
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .collect();
    let present: BTreeSet<&str> = lines
        .iter()
        .map(|l| l[0])
        .chain(std::iter::once(from))
        .collect();
    let mut shallow: BTreeSet<String> = lines
        .iter()
        .filter(|l| l[1..].iter().any(|p| !present.contains(p)))
        .map(|l| l[0].to_owned())
        .collect();
    let mut parents = git(repo);
    parents.args(["rev-list", "--parents", "--no-walk", from]);
    if run(parents, repo)?.split(' ').count() > 1 {
        shallow.insert(from.to_owned());
    }
    Ok(shallow)
}

fn write(path: &Path, text: &str) -> Result<(), GitError> {
    let fail = |source| GitError::Mirror {
        action: "write",
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, text).map_err(fail)
}

/// Runs git `args` in `repo` with `input` on its stdin; its trimmed stdout.
pub(super) fn with_stdin(repo: &Path, args: &[&str], input: &[u8]) -> Result<String, GitError> {
    let mut command = git(repo);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|source| GitError::Spawn { source })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written from a thread: git may fill its stdout before it has read all of its stdin.
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|source| GitError::Spawn { source })?;
    let written = writer.join().expect("the writer does not panic");
    if !out.status.success() || written.is_err() {
        return Err(GitError::Failed {
            args: args.join(" "),
            dir: repo.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::tests::test_git as sh_git;
    use super::*;

    /// A repository of 30 commits (one file each), tagged at 10 (`old`, annotated) and at 20
    /// (`new`), with `main` at 30; the commits' ids, oldest first.
    fn history(dir: &Path) -> Vec<String> {
        std::fs::create_dir(dir).unwrap();
        sh_git(dir, &["init", "--quiet", "-b", "main"]);
        let mut commits = Vec::new();
        for n in 1..=30 {
            std::fs::write(dir.join(format!("f{n}")), "x".repeat(1000 + n)).unwrap();
            sh_git(dir, &["add", "."]);
            sh_git(dir, &["commit", "--quiet", "-m", &format!("c{n}")]);
            commits.push(sh_git(dir, &["rev-parse", "HEAD"]));
            if n == 10 {
                sh_git(dir, &["tag", "-a", "-m", "old", "old"]);
            }
            if n == 20 {
                sh_git(dir, &["tag", "new"]);
            }
        }
        commits
    }

    fn own_objects(repo: &Path) -> u64 {
        sh_git(repo, &["count-objects", "-v"])
            .lines()
            .filter_map(|l| l.strip_prefix("count: ").or(l.strip_prefix("in-pack: ")))
            .map(|n| n.parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn a_host_input_borrows_the_objects_and_names_only_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let commits = history(&repo);
        let dest = dir.path().join("in");
        let mounts = materialize(&repo, &commits[19], None, true, &dest, Reach::Host).unwrap();
        assert!(mounts.is_empty());
        assert_eq!(own_objects(&dest), 0, "objects were copied");
        assert_eq!(sh_git(&dest, &["rev-parse", "HEAD"]), commits[19]);
        assert_eq!(
            sh_git(&dest, &["for-each-ref", "--format=%(refname)"]),
            "refs/tags/new"
        );
        assert_eq!(sh_git(&dest, &["status", "--porcelain"]), "");
        assert!(dest.join("f20").is_file() && !dest.join("f21").exists());
        // Shallow, as a copied input is: the step sees the commit, not the history before it.
        assert_eq!(sh_git(&dest, &["rev-list", "--count", "HEAD"]), "1");
        let dest = dir.path().join("in-history");
        materialize(
            &repo,
            &commits[19],
            Some(&commits[9]),
            true,
            &dest,
            Reach::Host,
        )
        .unwrap();
        assert_eq!(sh_git(&dest, &["rev-list", "--count", "HEAD"]), "11");
    }

    #[test]
    fn a_bound_input_names_its_objects_at_fixed_paths_and_masks_their_alternates() {
        let dir = tempfile::tempdir().unwrap();
        let lender = dir.path().join("lender");
        let commits = history(&lender);
        // A repository borrowing from another, as the fork's mirror does.
        let repo = dir.path().join("repo.git");
        sh_git(
            dir.path(),
            &[
                "clone", "--quiet", "--bare", "--shared", "lender", "repo.git",
            ],
        );
        let dest = dir.path().join("in");
        let mounts = materialize(&repo, &commits[29], None, true, &dest, Reach::Bound).unwrap();
        let repo_objects = std::fs::canonicalize(repo.join("objects")).unwrap();
        let lender_objects = std::fs::canonicalize(lender.join(".git/objects")).unwrap();
        let sources: Vec<&Path> = mounts.iter().map(|m| m.source.as_path()).collect();
        assert_eq!(
            sources,
            [
                repo_objects.as_path(),
                Path::new("/dev/null"),
                lender_objects.as_path()
            ]
        );
        assert!(
            mounts
                .iter()
                .all(|m| m.target.starts_with("/kiln/objects/"))
        );
        assert_eq!(
            mounts[1].target,
            format!("{}/info/alternates", mounts[0].target)
        );
        let alternates =
            std::fs::read_to_string(dest.join(".git/objects/info/alternates")).unwrap();
        assert_eq!(
            alternates,
            format!("{}\n{}\n", mounts[0].target, mounts[2].target)
        );
        // No host path in the input's own files.
        let host = dir.path().to_string_lossy().into_owned();
        for file in ["config", "shallow", "objects/info/alternates"] {
            let text = std::fs::read_to_string(dest.join(".git").join(file)).unwrap();
            assert!(!text.contains(&host), "{file}: {text}");
        }
    }

    #[test]
    fn a_copied_input_holds_its_tree_and_the_declared_history_only() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let commits = history(&repo);
        let dest = dir.path().join("in");
        let borrowed = materialize(
            &repo,
            &commits[19],
            Some(&commits[9]),
            true,
            &dest,
            Reach::Copied,
        )
        .unwrap();
        assert!(borrowed.is_empty());
        assert!(!dest.join(".git/objects/info/alternates").exists());
        assert_eq!(sh_git(&dest, &["rev-parse", "HEAD"]), commits[19]);
        // c10..c20: eleven commits, the oldest shallow.
        assert_eq!(sh_git(&dest, &["rev-list", "--count", "HEAD"]), "11");
        assert_eq!(
            std::fs::read_to_string(dest.join(".git/shallow")).unwrap(),
            format!("{}\n", commits[9])
        );
        sh_git(&dest, &["fsck", "--no-progress", "--no-dangling"]);
        assert_eq!(sh_git(&dest, &["status", "--porcelain"]), "");
        assert_eq!(
            sh_git(&dest, &["diff", "--stat", &commits[9], "HEAD"])
                .lines()
                .count(),
            11
        );
        // 11 commits, 11 trees, 20 blobs: nothing of c1..c9's own history, nothing after c20.
        assert_eq!(own_objects(&dest), 42);

        // One commit alone, and its annotated tag.
        let dest = dir.path().join("in-old");
        materialize(&repo, &commits[9], None, true, &dest, Reach::Copied).unwrap();
        assert_eq!(sh_git(&dest, &["rev-list", "--count", "HEAD"]), "1");
        assert_eq!(sh_git(&dest, &["describe", "--exact-match"]), "old");
        sh_git(&dest, &["fsck", "--no-progress", "--no-dangling"]);
        // A step commits on top, as tag.sh does.
        std::fs::write(dest.join("f1"), "stamped").unwrap();
        sh_git(&dest, &["commit", "--quiet", "-am", "stamp"]);
    }

    /// A merge in the history brings back content only an ancestor of `history_from` had:
    /// the merge is shallow (its old parent is not there) and its whole tree is copied.
    #[test]
    fn a_copied_input_holds_what_a_merge_of_old_history_brings_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let commits = history(&repo);
        // f1 as c1 made it, changed in c12 and merged back from c1 on top of c20.
        let old_f1 = sh_git(&repo, &["rev-parse", &format!("{}:f1", commits[0])]);
        sh_git(&repo, &["checkout", "--quiet", &commits[11]]);
        std::fs::write(repo.join("f1"), "changed").unwrap();
        sh_git(&repo, &["commit", "--quiet", "-am", "change f1"]);
        let changed = sh_git(&repo, &["rev-parse", "HEAD"]);
        sh_git(&repo, &["read-tree", &changed]);
        sh_git(
            &repo,
            &[
                "update-index",
                "--cacheinfo",
                &format!("100644,{old_f1},f1"),
            ],
        );
        let tree = sh_git(&repo, &["write-tree"]);
        let merge = sh_git(
            &repo,
            &[
                "commit-tree",
                &tree,
                "-p",
                &changed,
                "-p",
                &commits[0],
                "-m",
                "merge",
            ],
        );
        // The tip changes f1 once more: only the merge's tree holds the old content.
        sh_git(&repo, &["checkout", "--quiet", &merge]);
        std::fs::write(repo.join("f1"), "final").unwrap();
        sh_git(&repo, &["commit", "--quiet", "-am", "final f1"]);
        let tip = sh_git(&repo, &["rev-parse", "HEAD"]);
        let dest = dir.path().join("in");
        materialize(&repo, &tip, Some(&commits[9]), true, &dest, Reach::Copied).unwrap();
        sh_git(&dest, &["fsck", "--no-progress", "--no-dangling"]);
        assert_eq!(
            sh_git(&dest, &["show", &format!("{merge}:f1")]),
            "x".repeat(1001)
        );
        let shallow = std::fs::read_to_string(dest.join(".git/shallow")).unwrap();
        assert!(
            shallow.contains(&merge) && shallow.contains(&commits[9]),
            "{shallow}"
        );
    }

    #[test]
    fn an_input_without_a_worktree_writes_no_file_and_reads_through_git() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let commits = history(&repo);
        let dest = dir.path().join("in");
        materialize(&repo, &commits[19], None, false, &dest, Reach::Host).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [".git"]);
        assert_eq!(sh_git(&dest, &["rev-parse", "HEAD"]), commits[19]);
        assert_eq!(sh_git(&dest, &["show", "HEAD:f20"]), "x".repeat(1020));
    }

    #[test]
    fn a_repository_kept_private_is_copied_from_not_borrowed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let commits = history(&repo);
        let objects = repo.join(".git/objects");
        std::fs::set_permissions(&objects, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dest = dir.path().join("in");
        let mounts = materialize(&repo, &commits[29], None, true, &dest, Reach::Bound).unwrap();
        assert!(mounts.is_empty());
        assert!(!dest.join(".git/objects/info/alternates").exists());
        sh_git(&dest, &["fsck", "--no-progress", "--no-dangling"]);
        assert_eq!(sh_git(&dest, &["rev-parse", "HEAD"]), commits[29]);
    }

    #[test]
    fn bad_commit_ids_are_refused_before_git_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("in");
        for (commit, from) in [
            ("HEAD", None),
            (&"a".repeat(40)[..], Some("--upload-pack=x")),
        ] {
            assert!(matches!(
                materialize(dir.path(), commit, from, true, &dest, Reach::Host),
                Err(GitError::BadRev { .. })
            ));
        }
        assert!(!dest.exists());
    }
}
