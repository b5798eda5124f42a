//! Host-side git: resolve revisions to commit ids and check commits out for steps. Every call
//! is argv (never a shell), with `--end-of-options` before user-supplied names, git's own
//! configuration files ignored, and revision names checked against an allowlist first.

use std::path::{Path, PathBuf};
use std::process::Command;

mod input;
mod location;
mod ls_refs;
mod packed_refs;

pub(crate) use input::{ObjectMount, Reach, materialize};
pub(crate) use location::Location;

/// Why a git operation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GitError {
    /// The revision name is not one kiln accepts.
    #[error("`{rev}` is not an acceptable revision name")]
    #[diagnostic(
        code(kiln::git::bad_rev),
        help(
            "use a tag, branch or commit id: letters, digits and . _ / + - only, not starting with `-`, without `..`"
        )
    )]
    BadRev {
        /// The name as given.
        rev: String,
    },

    /// A repository location looks like an option or carries control characters.
    #[error("`{location}` is not an acceptable repository location")]
    #[diagnostic(
        code(kiln::git::bad_location),
        help("give a path or a URL (it must not start with `-`)")
    )]
    BadLocation {
        /// The location as given.
        location: String,
    },

    /// A location carries a password or token.
    #[error("`{location}` carries credentials")]
    #[diagnostic(
        code(kiln::git::credentials),
        help("remove them from the URL; git's credential helper or ssh agent supplies them")
    )]
    Credentials {
        /// The location, credentials redacted.
        location: String,
    },

    /// The current directory cannot be read (relative locations are taken from it).
    #[error("cannot read the current directory")]
    Cwd {
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A mirror under the store could not be prepared.
    #[error("cannot {action} {path}")]
    Mirror {
        /// What kiln was doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// git could not be started.
    #[error("cannot run git")]
    #[diagnostic(code(kiln::git::missing), help("install git (`apt-get install git`)"))]
    Spawn {
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The revision does not exist in the repository.
    #[error("{repo}: revision `{rev}` does not name a commit")]
    #[diagnostic(
        code(kiln::git::unknown_rev),
        help("check the name with `git -C {repo} log -1 {rev}`")
    )]
    UnknownRev {
        /// The repository.
        repo: String,
        /// The revision.
        rev: String,
    },

    /// A git command failed.
    #[error("`git {args}` failed in {dir}: {stderr}")]
    #[diagnostic(code(kiln::git::failed))]
    Failed {
        /// The arguments.
        args: String,
        /// Where it ran.
        dir: PathBuf,
        /// What git said.
        stderr: String,
    },
}

/// Checks a revision name against kiln's allowlist: `[A-Za-z0-9._/+-]`, 1–200 characters,
/// not starting with `-` or `/`, without `..`, `//` or a trailing `/` or `.lock`.
pub(crate) fn validate_rev(rev: &str) -> Result<(), GitError> {
    let ok = !rev.is_empty()
        && rev.len() <= 200
        && rev
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'+' | b'-'))
        && !rev.starts_with(['-', '/', '.'])
        && !rev.ends_with(['/', '.'])
        && std::path::Path::new(rev)
            .extension()
            .is_none_or(|e| e != "lock")
        && !rev.contains("..")
        && !rev.contains("//");
    if ok {
        Ok(())
    } else {
        Err(GitError::BadRev {
            rev: rev.to_owned(),
        })
    }
}

/// Where git runs when it needs no repository (`ls-remote`, `clone`): a directory no work tree
/// encloses, so nothing about the user's cwd changes what a command means.
const NEUTRAL_DIR: &str = "/";

/// Environment variables that would point git at another repository than the one named.
const REPO_ENV: [&str; 8] = [
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// A `git -C dir` that looks for a repository at `dir` only: never in a work tree enclosing
/// it (a missing mirror must not become the user's checkout), never where an inherited
/// `GIT_DIR` points.
fn located(dir: &Path) -> Command {
    let mut command = Command::new("git");
    for name in REPO_ENV {
        command.env_remove(name);
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    if let Some(parent) = dir.parent() {
        command.env("GIT_CEILING_DIRECTORIES", parent);
    }
    command
        .arg("-C")
        .arg(&dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C");
    command
}

/// A `git` command isolated from the user's and system's git configuration.
fn git(dir: &Path) -> Command {
    let mut command = located(dir);
    command.env("GIT_CONFIG_GLOBAL", "/dev/null");
    command
}

/// Git syncs what it writes (objects, packs, refs) before it renames it into place: a
/// mirror in the store survives a power loss whole, like the store's own files.
fn durably(mut command: Command) -> Command {
    command
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "core.fsync")
        .env("GIT_CONFIG_VALUE_0", "all");
    command
}

fn run(mut command: Command, dir: &Path) -> Result<String, GitError> {
    let output = command
        .output()
        .map_err(|source| GitError::Spawn { source })?;
    if !output.status.success() {
        let args = command
            .get_args()
            .skip(2)
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        return Err(GitError::Failed {
            args: args.join(" "),
            dir: dir.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs git with `args` in `repo`, isolated from the user's configuration, and returns its
/// trimmed stdout. Callers validate any user-supplied name in `args` first.
pub(crate) fn output(repo: &Path, args: &[&str]) -> Result<String, GitError> {
    let mut command = git(repo);
    command.args(args);
    run(command, repo)
}

/// The commit id `rev` names in `repo`.
pub(crate) fn resolve_commit(repo: &Path, rev: &str) -> Result<String, GitError> {
    validate_rev(rev)?;
    let mut command = git(repo);
    command
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{rev}^{{commit}}"));
    run(command, repo).map_err(|error| match error {
        GitError::Failed { .. } => GitError::UnknownRev {
            repo: repo.display().to_string(),
            rev: rev.to_owned(),
        },
        other => other,
    })
}

/// The branch the repository at `location` names as its default (its `HEAD`), by one
/// `git ls-remote --symref`; `None` when it names none kiln takes. A local work tree's `HEAD`
/// is only what is checked out there (a PR branch, say): its default branch is the one its
/// `origin` names (`refs/remotes/origin/HEAD`), when it has that branch itself.
pub(crate) fn default_branch(location: &Location) -> Result<Option<String>, GitError> {
    if let Some(path) = location.local_path()
        && output(path, &["rev-parse", "--is-bare-repository"]).is_ok_and(|b| b == "false")
    {
        let named = output(
            path,
            &["symbolic-ref", "--quiet", "refs/remotes/origin/HEAD"],
        )
        .ok();
        return Ok(named
            .as_deref()
            .and_then(|r| r.strip_prefix("refs/remotes/origin/"))
            .filter(|branch| validate_rev(branch).is_ok())
            .filter(|branch| {
                output(
                    path,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("refs/heads/{branch}"),
                    ],
                )
                .is_ok()
            })
            .map(str::to_owned));
    }
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    command.args([
        "ls-remote",
        "--symref",
        "--quiet",
        "--end-of-options",
        location.as_str(),
        "HEAD",
    ]);
    let out = run(command, Path::new(NEUTRAL_DIR))?;
    Ok(out
        .lines()
        .find_map(|line| line.strip_prefix("ref: refs/heads/"))
        .and_then(|rest| rest.strip_suffix("\tHEAD"))
        .filter(|branch| validate_rev(branch).is_ok())
        .map(str::to_owned))
}

/// The tag names of the repository at `location`, by one `git ls-remote`. Names outside
/// kiln's allowlist are skipped with a warning: they never reach a command.
pub(crate) fn list_tags(location: &Location) -> Result<Vec<String>, GitError> {
    let mut command = git(Path::new(NEUTRAL_DIR));
    command.args([
        "ls-remote",
        "--tags",
        "--refs",
        "--quiet",
        "--end-of-options",
        location.as_str(),
    ]);
    let out = run(command, Path::new(NEUTRAL_DIR))?;
    let mut tags = Vec::new();
    for line in out.lines() {
        let Some(name) = line
            .split('\t')
            .nth(1)
            .and_then(|r| r.strip_prefix("refs/tags/"))
        else {
            continue;
        };
        match validate_rev(name) {
            Ok(()) => tags.push(name.to_owned()),
            Err(_) => tracing::warn!(
                %location,
                tag = name,
                "ignoring a tag name outside kiln's allowlist"
            ),
        }
    }
    tags.sort();
    Ok(tags)
}

/// A repository's refs: full name → the object it names (annotated tags unpeeled).
pub(crate) type RefList = std::collections::BTreeMap<String, String>;

/// Every branch and every tag: what a mirror holds, as [`remote_refs`] prefixes.
pub(crate) const ALL_REFS: [&str; 2] = ["refs/heads/", "refs/tags/"];

/// A remote's branches and tags under some name prefixes, as one listing saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Listed {
    /// The prefixes asked for, each under `refs/heads/` or `refs/tags/`.
    pub(crate) prefixes: Vec<String>,
    /// The refs under them: full name → object (annotated tags unpeeled).
    pub(crate) refs: RefList,
}

impl Listed {
    /// Whether the ref `name` is one this listing would show.
    #[must_use]
    pub(crate) fn covers(&self, name: &str) -> bool {
        self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Whether a mirror holding `refs` holds what was listed: exactly the listed refs under
    /// the prefixes, and nothing but branches and tags anywhere (a mirror keeps no other ref).
    #[must_use]
    pub(crate) fn held_by(&self, refs: &RefList) -> bool {
        refs.keys().all(|name| mirrored(name)) && self.within(refs) == self.refs
    }

    /// `refs` cut down to the names this listing would show.
    #[must_use]
    pub(crate) fn within(&self, refs: &RefList) -> RefList {
        refs.iter()
            .filter(|(name, _)| self.covers(name))
            .map(|(name, oid)| (name.clone(), oid.clone()))
            .collect()
    }
}

/// Whether a mirror keeps the ref `name`: branches and tags only.
fn mirrored(name: &str) -> bool {
    ALL_REFS.iter().any(|p| name.starts_with(p))
}

/// The branches and tags of the repository at `location` whose names start with one of
/// `prefixes` (full names, unpeeled): what a mirror of it holds there once fetched. Asked for
/// by protocol v2 with those prefixes (see `ls_refs`), so the remote sends only them, however
/// many other tags and `refs/pull/*` it has; over a transport kiln does not speak, by one
/// `git ls-remote` of every branch and tag, cut down here.
///
/// # Panics
/// When a prefix is not under `refs/heads/` or `refs/tags/` (the caller's names, checked).
pub(crate) fn remote_refs(location: &Location, prefixes: &[&str]) -> Result<Listed, GitError> {
    assert!(
        prefixes.iter().all(|p| {
            (p.starts_with("refs/heads/") || p.starts_with("refs/tags/"))
                && !p.contains(char::is_control)
        }),
        "ref prefixes are branches or tags: {prefixes:?}"
    );
    let listed = |refs| Listed {
        prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        refs,
    };
    if let Some(refs) = ls_refs::list(location, prefixes)? {
        return Ok(listed(refs));
    }
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    command.args([
        "ls-remote",
        "--heads",
        "--tags",
        "--refs",
        "--quiet",
        "--end-of-options",
        location.as_str(),
    ]);
    let all = listed(ref_list(&run(command, Path::new(NEUTRAL_DIR))?));
    Ok(Listed {
        refs: all.within(&all.refs),
        ..all
    })
}

/// A [`RefList`] from lines `OID<TAB>NAME`, as `ls-remote` prints them.
fn ref_list(lines: &str) -> RefList {
    lines
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(oid, name)| (name.to_owned(), oid.to_owned()))
        .collect()
}

/// Every ref of the local repository `repo` (one `git for-each-ref`, no remote protocol).
pub(crate) fn local_refs(repo: &Path) -> Result<RefList, GitError> {
    let mut command = git(repo);
    command.args(["for-each-ref", "--format=%(objectname)%09%(refname)"]);
    Ok(ref_list(&run(command, repo)?))
}

/// The commit each tag of the local repository `repo` names (an annotated tag peeled once),
/// by one `git for-each-ref`; a tag naming no commit that way is left out.
pub(crate) fn tag_commits(repo: &Path) -> Result<RefList, GitError> {
    let mut command = git(repo);
    command.args([
        "for-each-ref",
        "--format=%(refname:strip=2) %(objecttype) %(objectname) %(*objecttype) %(*objectname)",
        "refs/tags",
    ]);
    Ok(run(command, repo)?
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                [name, "commit", oid] | [name, "tag", _, "commit", oid] => {
                    Some(((*name).to_owned(), (*oid).to_owned()))
                }
                _ => None,
            },
        )
        .collect())
}

/// The tag names among `refs`, sorted, as [`list_tags`] gives them: names outside kiln's
/// allowlist are skipped, with a warning naming `location` when one is given.
pub(crate) fn tag_names(refs: &RefList, location: Option<&Location>) -> Vec<String> {
    refs.keys()
        .filter_map(|name| name.strip_prefix("refs/tags/"))
        .filter(|name| {
            let ok = validate_rev(name).is_ok();
            if let (false, Some(location)) = (ok, location) {
                tracing::warn!(
                    %location,
                    tag = name,
                    "ignoring a tag name outside kiln's allowlist"
                );
            }
            ok
        })
        .map(str::to_owned)
        .collect()
}

/// The refs of a remote under one namespace, as one `git ls-remote` saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RemoteRefs {
    /// Names (without the `refs/tags/` or `refs/heads/` prefix) inside kiln's allowlist →
    /// the commit they point at (annotated tags peeled).
    pub(crate) refs: std::collections::BTreeMap<String, String>,
    /// Names outside the allowlist, escaped for display; they never reach a command.
    pub(crate) refused: Vec<String>,
}

/// One `git ls-remote` of `location` for `namespace` (`tags` or `heads`). The user's git
/// configuration is honoured here (credential helpers, `insteadOf`): this only talks to a
/// remote and changes nothing.
pub(crate) fn ls_remote(location: &Location, namespace: &str) -> Result<RemoteRefs, GitError> {
    let prefix = format!("refs/{namespace}/");
    let mut command = remote_git(Path::new(NEUTRAL_DIR));
    command.args([
        "ls-remote",
        "--quiet",
        &format!("--{namespace}"),
        "--end-of-options",
        location.as_str(),
    ]);
    let out = run(command, Path::new(NEUTRAL_DIR))?;
    let mut direct = std::collections::BTreeMap::new();
    let mut peeled = std::collections::BTreeMap::new();
    let mut refused = Vec::new();
    for line in out.lines() {
        let Some((oid, name)) = line.split_once('\t') else {
            continue;
        };
        let Some(name) = name.strip_prefix(&prefix) else {
            continue;
        };
        let (name, is_peeled) = name
            .strip_suffix("^{}")
            .map_or((name, false), |n| (n, true));
        if validate_rev(name).is_err() {
            if !is_peeled {
                refused.push(name.escape_debug().to_string());
            }
            continue;
        }
        if is_peeled {
            peeled.insert(name.to_owned(), oid.to_owned());
        } else {
            direct.insert(name.to_owned(), oid.to_owned());
        }
    }
    for (name, oid) in peeled {
        direct.insert(name, oid);
    }
    Ok(RemoteRefs {
        refs: direct,
        refused,
    })
}

/// A `git` command for talking to remotes: the system configuration is ignored, the user's
/// is kept (credentials), prompts are off.
fn remote_git(dir: &Path) -> Command {
    let mut command = located(dir);
    guard_stalls(&mut command);
    command
}

/// A connection that stalls (a laptop that slept, a dropped route: no reset ever comes) would
/// hang a fetch or push over HTTP forever: git gives up after two minutes of silence unless
/// the captain's environment sets its own limits.
fn guard_stalls(command: &mut Command) {
    for (name, value) in [
        ("GIT_HTTP_LOW_SPEED_LIMIT", "1"),
        ("GIT_HTTP_LOW_SPEED_TIME", "120"),
    ] {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    }
}

/// Pushes `refs` (full ref names, each created at the same name) from `repo` to `location` in
/// one atomic push: the remote takes all of them or none. Never forces. Returns git's
/// porcelain report on failure as the error's stderr.
pub(crate) fn push_atomic(
    repo: &Path,
    location: &Location,
    refs: &[String],
) -> Result<(), GitError> {
    for name in refs {
        let short = name
            .strip_prefix("refs/tags/")
            .or_else(|| name.strip_prefix("refs/heads/"))
            .ok_or_else(|| GitError::BadRev { rev: name.clone() })?;
        validate_rev(short)?;
    }
    let mut command = remote_git(repo);
    command
        .args([
            "push",
            "--atomic",
            "--porcelain",
            "--no-verify",
            "--end-of-options",
            location.as_str(),
        ])
        .args(refs.iter().map(|r| format!("{r}:{r}")));
    let output = command
        .output()
        .map_err(|source| GitError::Spawn { source })?;
    if output.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let porcelain = String::from_utf8_lossy(&output.stdout);
    for line in porcelain.lines().filter(|l| l.starts_with('!')) {
        said.push('\n');
        said.push_str(line);
    }
    Err(GitError::Failed {
        args: format!("push --atomic {location} ({} refs)", refs.len()),
        dir: repo.to_owned(),
        stderr: said,
    })
}

/// The commit `name` (a full ref name) points at in `repo`; `Ok(None)` when it does not exist.
pub(crate) fn ref_commit(repo: &Path, name: &str) -> Result<Option<String>, GitError> {
    let short = name
        .strip_prefix("refs/tags/")
        .or_else(|| name.strip_prefix("refs/heads/"))
        .ok_or_else(|| GitError::BadRev {
            rev: name.to_owned(),
        })?;
    validate_rev(short)?;
    let mut command = git(repo);
    command
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{name}^{{commit}}"));
    let output = command
        .output()
        .map_err(|source| GitError::Spawn { source })?;
    // rev-parse --verify --quiet: exit 1 and no output for a ref that does not exist.
    Ok(output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned()))
}

/// Fetches `refs` (full ref names, each to the same name) from the bundle file `bundle` into
/// `repo`, then checks each is at its commit. Never forces: git refuses to move an existing
/// tag or rewind a branch.
pub(crate) fn fetch_bundle(
    repo: &Path,
    bundle: &Path,
    refs: &[(String, String)],
) -> Result<(), GitError> {
    for (name, _) in refs {
        ref_commit(repo, name)?;
    }
    let mut command = git(repo);
    command
        .args([
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--end-of-options",
        ])
        .arg(absolute(bundle))
        .args(refs.iter().map(|(name, _)| format!("{name}:{name}")));
    run(command, repo)?;
    for (name, commit) in refs {
        let at = ref_commit(repo, name)?;
        if at.as_deref() != Some(commit.as_str()) {
            return Err(GitError::Failed {
                args: format!("fetch {name}"),
                dir: repo.to_owned(),
                stderr: format!(
                    "the bundle put {name} at {}, not at {commit}",
                    at.as_deref().unwrap_or("nothing")
                ),
            });
        }
    }
    Ok(())
}

/// Keeps a bare mirror of `location` under `dir` (named by a digest of the location) up to
/// date, and returns its path. The user's repository is only read.
pub(crate) fn mirror(dir: &Path, location: &Location) -> Result<PathBuf, GitError> {
    mirror_borrowing(dir, location, None, None)
}

/// [`mirror`], the mirror keeping only the objects the mirror `lender` lacks: git's alternates,
/// so the k3s-io fork, a second copy of Kubernetes' history, costs only its own commits and
/// tags on disk and on the wire (a fetch offers the lender's refs as what it has). A mirror
/// made whole by an older kiln is repacked down to its own objects once.
///
/// `listed`: the remote's branches and tags (under some prefixes) as [`remote_refs`] just read
/// them. A mirror that already holds exactly those refs there is not fetched: the release
/// reads nothing else of it, and at Kubernetes' size (thousands of tags) a fetch costs more
/// than the rest of a cached release. A fetch takes every branch and tag.
pub(crate) fn mirror_borrowing(
    dir: &Path,
    location: &Location,
    lender: Option<&Path>,
    listed: Option<&Listed>,
) -> Result<PathBuf, GitError> {
    sync_mirror(dir, location, lender, listed).map(|(path, _)| path)
}

/// [`mirror_borrowing`], also giving the refs the mirror holds once synced: all of them when
/// it was fetched, else (no second read) what was listed, which it holds.
pub(crate) fn sync_mirror(
    dir: &Path,
    location: &Location,
    lender: Option<&Path>,
    listed: Option<&Listed>,
) -> Result<(PathBuf, RefList), GitError> {
    let dir = &absolute(dir);
    let path = mirror_path(dir, location);
    let fail = mirror_error;
    std::fs::create_dir_all(dir).map_err(fail("create", dir))?;
    // The mirrors' objects are readable by anyone (steps read them as their own user, bound
    // by the engine): their directory keeps other users of the host out.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)
            .map_err(fail("read", dir))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(fail("restrict", dir))?;
        }
    }
    let lock = lock_mirror(&path)?;
    // A pack a power cut emptied or cut short (git does not sync what it writes) would have
    // a fetch succeed beside it and every later read complain: a mirror is a cache, cloned
    // again.
    if path.join("HEAD").is_file() && !packed_refs::packs_look_whole(&path.join("objects/pack")) {
        tracing::warn!(
            mirror = %path.display(),
            "the git mirror has a damaged pack (emptied or cut short); cloning it again"
        );
        std::fs::remove_dir_all(&path).map_err(fail("remove", &path))?;
    }
    // Resolved: the path is written into the alternates and compared with them.
    let lender = lender
        .and_then(|l| std::fs::canonicalize(l).ok())
        .filter(|l| *l != path && l.join("objects").is_dir());
    if let Some(lender) = &lender
        && path.join("HEAD").is_file()
    {
        borrow(&path, lender)?;
    }
    let current = listed.filter(|listed| holds(&path, listed));
    if current.is_some() {
        tracing::debug!(mirror = %path.display(), "the mirror holds the remote's refs: not fetched");
    } else if path.join("HEAD").is_file() {
        let mut fetch = durably(git(&path));
        guard_stalls(&mut fetch);
        fetch.args([
            "fetch",
            "--quiet",
            "--prune",
            "--prune-tags",
            "--force",
            "origin",
        ]);
        // A mirror is a cache: one a power loss or a full disk left damaged (git does not
        // sync its objects) is cloned again. A sound mirror keeps the fetch's own error.
        let fetched = only_branches_and_tags(&path)
            .and_then(|()| run(fetch, &path))
            .and_then(|_| {
                // A fetch writes what moved as loose refs; packed, the next cached
                // release reads them without git (see packed_refs).
                let mut pack = durably(git(&path));
                pack.args(["pack-refs", "--all", "--prune"]);
                run(pack, &path)
            });
        if let Err(error) = fetched {
            let mut check = git(&path);
            check.args([
                "fsck",
                "--connectivity-only",
                "--no-dangling",
                "--no-progress",
            ]);
            if run(check, &path).is_ok() {
                return Err(error);
            }
            tracing::warn!(
                mirror = %path.display(),
                "the git mirror is damaged ({error}); cloning it again"
            );
            std::fs::remove_dir_all(&path).map_err(fail("remove", &path))?;
        }
    }
    if !path.join("HEAD").is_file() {
        let tmp = path.with_extension("git.partial");
        // Under the lock, a partial clone is a killed clone's: start again.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(fail("remove", &tmp))?;
        }
        let mut clone = durably(git(Path::new(NEUTRAL_DIR)));
        guard_stalls(&mut clone);
        // Branches and tags only: a GitHub remote also has tens of thousands of
        // refs/pull/N/{head,merge} (and their objects), which `--mirror` would take.
        clone.args(["clone", "--quiet", "--bare"]);
        if let Some(lender) = &lender {
            // `--no-local`: a clone of a local path would copy every object.
            clone.arg("--no-local").arg("--reference").arg(lender);
        }
        clone
            .args(["--end-of-options", location.as_str()])
            .arg(&tmp);
        run(clone, Path::new(NEUTRAL_DIR))?;
        only_branches_and_tags(&tmp)?;
        // Publish whole: a killed clone never looks like a mirror.
        std::fs::rename(&tmp, &path).map_err(fail("publish", &path))?;
    }
    mirror_settings(&path)?;
    let held = match current {
        Some(listed) => listed.refs.clone(),
        None => local_refs(&path)?,
    };
    drop(lock);
    Ok((path, held))
}

/// The mirror of `location` under `dir`, if it already holds exactly `listed` (under its
/// prefixes) and borrows from `lender` (when given) already; `None` otherwise. Changes nothing
/// a release's name checks must come before (no clone, fetch or repack), so it can run while
/// other remotes are still being listed; [`sync_mirror`] does the rest for a `None`.
pub(crate) fn held_mirror(
    dir: &Path,
    location: &Location,
    lender: Option<&Path>,
    listed: &Listed,
) -> Result<Option<PathBuf>, GitError> {
    let path = mirror_path(dir, location);
    if !path.join("HEAD").is_file() {
        return Ok(None);
    }
    let lock = lock_mirror(&path)?;
    let borrowing = lender.is_none_or(|lender| {
        std::fs::canonicalize(lender).is_ok_and(|lender| {
            let line = format!("{}/objects", lender.display());
            std::fs::read_to_string(path.join("objects/info/alternates"))
                .is_ok_and(|text| text.lines().any(|l| l == line))
        })
    });
    if !borrowing || !holds(&path, listed) {
        return Ok(None);
    }
    tracing::debug!(mirror = %path.display(), "the mirror holds the remote's refs: not fetched");
    mirror_settings(&path)?;
    drop(lock);
    Ok(Some(path))
}

/// Where the mirror of `location` lives under `dir`: named by a digest of the location.
pub(crate) fn mirror_path(dir: &Path, location: &Location) -> PathBuf {
    let name = crate::hash::Digest::of(location.as_str().as_bytes()).short();
    absolute(dir).join(format!("{name}.git"))
}

/// The error of a mirror's file operation `action` on `at`.
fn mirror_error(action: &'static str, at: &Path) -> impl FnOnce(std::io::Error) -> GitError {
    let at = at.to_owned();
    move |source| GitError::Mirror {
        action,
        path: at,
        source,
    }
}

/// Takes the mirror at `path`'s lock: one process (and thread) at a time per mirror, for two
/// releases on one store would race on the first clone and on `fetch --prune`. Released when
/// the returned file closes, kill -9 included.
fn lock_mirror(path: &Path) -> Result<std::fs::File, GitError> {
    let lock_path = path.with_extension("git.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(mirror_error("open", &lock_path))?;
    lock.lock().map_err(mirror_error("lock", &lock_path))?;
    Ok(lock)
}

/// Whether the mirror at `path` holds exactly the refs `listed` under its prefixes (read from
/// `packed-refs` when every ref is packed there, else by git) in packs that look whole.
/// Neither reading checks that a ref's objects are there; a pack a power cut emptied or cut
/// short is caught by its size and header, and the mirror is then fetched (and cloned again
/// when the fetch finds it damaged).
fn holds(path: &Path, listed: &Listed) -> bool {
    path.join("HEAD").is_file()
        && packed_refs::packs_look_whole(&path.join("objects/pack"))
        && packed_refs::holds_exactly(path, listed)
            .unwrap_or_else(|| local_refs(path).is_ok_and(|held| listed.held_by(&held)))
}

/// What every mirror keeps set (each under its own lock, once):
/// - steps read its objects where they are (bound read-only, as their own user), so they are
///   readable by anyone whatever the captain's umask: git keeps what it writes so
///   (`core.sharedRepository`), and what was written before is opened up once;
/// - a mirror may lend its objects to another (the fork's), which may hold refs to objects
///   this one no longer reaches (a tag upstream deleted): it never prunes.
fn mirror_settings(path: &Path) -> Result<(), GitError> {
    const SETTINGS: [(&str, &str); 2] = [
        ("core.sharedRepository", "0644"),
        ("gc.pruneExpire", "never"),
    ];
    // Read from the mirror's own config file when it is as plain as git writes it (a cached
    // release asks every mirror), else both by one git (exit 1 when neither is set).
    let held = plain_settings(path).unwrap_or_else(|| {
        let mut get = git(path);
        get.args([
            "config",
            "--get-regexp",
            r"^(core\.sharedrepository|gc\.pruneexpire)$",
        ]);
        run(get, path).unwrap_or_default()
    });
    for (key, value) in SETTINGS {
        // The last one set wins, as for `git config --get`.
        let current = held
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
            .next_back();
        if current == Some(value) {
            continue;
        }
        if key == "core.sharedRepository" {
            open_up(&path.join("objects")).map_err(|source| GitError::Mirror {
                action: "make readable",
                path: path.join("objects"),
                source,
            })?;
        }
        let mut set = git(path);
        set.args(["config", "--replace-all", key, value]);
        run(set, path)?;
    }
    Ok(())
}

/// `core.sharedRepository` and `gc.pruneExpire` as the bare repository `path`'s own `config`
/// file sets them, one `key value` line each as `git config --get-regexp` prints them (keys in
/// lower case, in file order). `None` when the file is not as plain as git writes it (an
/// include, a quoted or escaped value, a continued line): git is asked then.
fn plain_settings(path: &Path) -> Option<String> {
    const KEYS: [&str; 2] = ["core.sharedrepository", "gc.pruneexpire"];
    let text = std::fs::read_to_string(path.join("config")).ok()?;
    let mut section = String::new();
    let mut found = String::new();
    for line in text.lines().map(str::trim) {
        if line.ends_with('\\') {
            return None;
        }
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            section = header.strip_suffix(']')?.to_ascii_lowercase();
            if section.starts_with("include") {
                return None;
            }
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, "true"));
        let key = format!("{section}.{}", key.trim()).to_ascii_lowercase();
        if !KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = value.trim();
        if value.contains(['"', '\\', '#', ';']) {
            return None;
        }
        found.push_str(&key);
        found.push(' ');
        found.push_str(value);
        found.push('\n');
    }
    Some(found)
}

/// Adds read permission for everyone to every file under `dir`, and search permission to
/// every directory (`chmod -R a+rX`); symlinks are left alone.
fn open_up(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let mode = std::fs::metadata(&dir)?.permissions().mode();
        if mode & 0o555 != 0o555 {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o555))?;
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                let mode = entry.metadata()?.permissions().mode();
                if mode & 0o444 != 0o444 {
                    std::fs::set_permissions(
                        entry.path(),
                        std::fs::Permissions::from_mode(mode | 0o444),
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// Makes the existing mirror `path` borrow `lender`'s objects, and drops its own copies of
/// them (`repack -l`). Nothing to do when it already does.
fn borrow(path: &Path, lender: &Path) -> Result<(), GitError> {
    let file = path.join("objects/info/alternates");
    let line = format!("{}/objects", lender.display());
    let current = std::fs::read_to_string(&file).unwrap_or_default();
    if current.lines().any(|l| l == line) {
        return Ok(());
    }
    let info = path.join("objects/info");
    std::fs::create_dir_all(&info).map_err(|source| GitError::Mirror {
        action: "create",
        path: info.clone(),
        source,
    })?;
    let text = format!("{current}{line}\n");
    crate::durable::write(&file, text.as_bytes(), crate::durable::Placement::Beside).map_err(
        |e| GitError::Mirror {
            action: e.action,
            path: e.path,
            source: e.source,
        },
    )?;
    // Loose objects first into a pack (`-l` leaves a borrowed loose object where it is), then
    // that pack without what the lender has.
    for args in [
        ["repack", "-a", "-d", "-q"].as_slice(),
        &["repack", "-a", "-d", "-l", "-q"],
    ] {
        let mut repack = durably(git(path));
        repack.args(args);
        run(repack, path)?;
    }
    Ok(())
}

/// The refs a mirror keeps: its remote's branches and tags, nothing else.
const MIRROR_REFSPECS: [&str; 2] = ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"];

/// Makes the bare repository `path` fetch only [`MIRROR_REFSPECS`] and drops any other ref it
/// has (a mirror made by an older kiln with `clone --mirror` holds `refs/pull/*` and the
/// like; their objects go at git's next gc). Idempotent and cheap.
fn only_branches_and_tags(path: &Path) -> Result<(), GitError> {
    let mut set = git(path);
    set.args([
        "config",
        "--replace-all",
        "remote.origin.fetch",
        MIRROR_REFSPECS[0],
    ]);
    run(set, path)?;
    let mut add = git(path);
    add.args(["config", "--add", "remote.origin.fetch", MIRROR_REFSPECS[1]]);
    run(add, path)?;
    let mut unset = git(path);
    unset.args(["config", "--unset-all", "remote.origin.mirror"]);
    // Exit 5: there was no such setting.
    let _ = unset.output();
    let mut list = git(path);
    list.args(["for-each-ref", "--format=%(refname)"]);
    let mut other = String::new();
    for name in run(list, path)?
        .lines()
        .filter(|r| !r.starts_with("refs/heads/") && !r.starts_with("refs/tags/"))
    {
        other.push_str("delete ");
        other.push_str(name);
        other.push('\n');
    }
    if !other.is_empty() {
        input::with_stdin(path, &["update-ref", "--stdin"], other.as_bytes())?;
    }
    Ok(())
}

/// The content of `path` at `rev` in `repo`; `Ok(None)` when the file does not exist there.
pub(crate) fn read_file(repo: &Path, rev: &str, path: &str) -> Result<Option<String>, GitError> {
    validate_rev(rev)?;
    let mut command = git(repo);
    command.args([
        "cat-file",
        "-p",
        "--end-of-options",
        &format!("{rev}:{path}"),
    ]);
    let output = command
        .output()
        .map_err(|source| GitError::Spawn { source })?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// The objects `specs` name (`REV:PATH`, or an object id) in `repo`, read with one
/// `git cat-file --batch`, in order; `None` for one that does not exist.
pub(crate) fn read_objects(
    repo: &Path,
    specs: &[String],
) -> Result<Vec<Option<Vec<u8>>>, GitError> {
    use std::io::{BufRead as _, Read as _, Write as _};
    use std::process::Stdio;
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let failed = |stderr: String| GitError::Failed {
        args: "cat-file --batch".to_owned(),
        dir: repo.to_owned(),
        stderr,
    };
    for spec in specs {
        // One request per line: a name with a newline would be two.
        if spec.contains('\n') {
            return Err(failed(format!("a request with a newline: {spec:?}")));
        }
    }
    let mut command = git(repo);
    command
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command
        .spawn()
        .map_err(|source| GitError::Spawn { source })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let request: String = specs.iter().flat_map(|s| [s.as_str(), "\n"]).collect();
    // Written from a thread: git fills its stdout before it has read all of its stdin.
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let io = |e: std::io::Error| failed(e.to_string());
    let mut objects = Vec::with_capacity(specs.len());
    for spec in specs {
        let mut header = String::new();
        out.read_line(&mut header).map_err(io)?;
        let header = header.trim_end_matches('\n');
        if header.ends_with(" missing") || header.ends_with(" ambiguous") {
            objects.push(None);
            continue;
        }
        let size = header
            .rsplit(' ')
            .next()
            .and_then(|size| size.parse::<usize>().ok())
            .ok_or_else(|| failed(format!("for {spec}: `{header}`")))?;
        let mut content = vec![0u8; size];
        out.read_exact(&mut content).map_err(io)?;
        let mut newline = [0u8; 1];
        out.read_exact(&mut newline).map_err(io)?;
        objects.push(Some(content));
    }
    writer
        .join()
        .expect("the writer does not panic")
        .map_err(io)?;
    let status = child.wait().map_err(io)?;
    if !status.success() {
        return Err(failed(format!("git cat-file exited with {status}")));
    }
    Ok(objects)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a test's own git (`args` as given, in `dir`) with a fixed identity and no user
    /// configuration; its trimmed stdout. Fails the test when git fails.
    pub(super) fn test_git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@kiln.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@kiln.invalid")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A repository `origin` under `dir` with one empty commit on `main`.
    fn origin_with_one_commit(dir: &Path) -> PathBuf {
        let origin = dir.join("origin");
        std::fs::create_dir(&origin).unwrap();
        test_git(&origin, &["init", "--quiet", "-b", "main"]);
        test_git(
            &origin,
            &["commit", "--quiet", "--allow-empty", "-m", "one"],
        );
        origin
    }

    #[test]
    fn concurrent_mirrors_of_one_location_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        let status = Command::new("git")
            .args(["init", "--quiet", "--bare"])
            .arg(&origin)
            .status()
            .unwrap();
        assert!(status.success());
        let location = Location::parse_in(&origin.to_string_lossy(), Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");
        for round in 0..3 {
            // Round 0 races on the first clone, the others on fetch --prune.
            let results: Vec<Result<PathBuf, GitError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| scope.spawn(|| mirror(&mirrors, &location)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for result in results {
                let path = result.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
                assert!(path.join("HEAD").is_file());
            }
        }
        let left: Vec<_> = std::fs::read_dir(&mirrors)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// What a power cut leaves of a mirror git never synced: files emptied. The next mirror
    /// call clones it again instead of failing every release on that store.
    #[test]
    fn a_damaged_mirror_is_cloned_again() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        let git_in = |args: &[&str]| {
            test_git(Path::new("/"), args);
        };
        let origin_text = origin.to_string_lossy().into_owned();
        git_in(&["init", "--quiet", "-b", "main", &origin_text]);
        std::fs::write(origin.join("f"), "one\n").unwrap();
        git_in(&["-C", &origin_text, "add", "f"]);
        git_in(&["-C", &origin_text, "commit", "--quiet", "-m", "one"]);
        let location = Location::parse_in(&origin_text, Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");
        let path = mirror(&mirrors, &location).unwrap();
        let emptied = empty_files(&path);
        assert!(emptied > 3, "the mirror had files to lose: {emptied}");

        let again = mirror(&mirrors, &location).unwrap();
        assert_eq!(again, path);
        let head = output(&path, &["rev-parse", "refs/heads/main"]).unwrap();
        let want = output(&origin, &["rev-parse", "refs/heads/main"]).unwrap();
        assert_eq!(head, want);
        output(&path, &["fsck", "--no-progress"]).unwrap();

        // A sound mirror whose origin went away keeps itself and reports the fetch's error.
        std::fs::rename(&origin, dir.path().join("gone")).unwrap();
        let error = mirror(&mirrors, &location).unwrap_err();
        assert!(error.to_string().contains("fetch"), "{error}");
        assert!(path.join("HEAD").is_file(), "the sound mirror was kept");
    }

    /// A GitHub remote's pull refs are never fetched: neither by the first clone (nor their
    /// objects, over a transport) nor by later fetches; a mirror an older kiln made with
    /// `clone --mirror` loses them at its next fetch.
    #[test]
    fn mirrors_take_branches_and_tags_never_pull_refs() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        let origin_text = origin.to_string_lossy().into_owned();
        std::fs::create_dir(&origin).unwrap();
        let git_in = |args: &[&str]| test_git(&origin, args);
        git_in(&["init", "--quiet", "-b", "main"]);
        git_in(&["commit", "--quiet", "--allow-empty", "-m", "one"]);
        git_in(&["tag", "v1.28.2"]);
        // A pull request: a commit only its refs reach.
        git_in(&["commit", "--quiet", "--allow-empty", "-m", "pr"]);
        let pr = git_in(&["rev-parse", "HEAD"]);
        git_in(&["update-ref", "refs/pull/1/head", &pr]);
        git_in(&["update-ref", "refs/pull/1/merge", &pr]);
        git_in(&["reset", "--quiet", "--hard", "HEAD~1"]);
        let refs = |repo: &Path| output(repo, &["for-each-ref", "--format=%(refname)"]).unwrap();

        let location =
            Location::parse_in(&format!("file://{origin_text}"), Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");
        let path = mirror(&mirrors, &location).unwrap();
        assert_eq!(refs(&path), "refs/heads/main\nrefs/tags/v1.28.2");
        assert!(
            output(&path, &["cat-file", "-e", &pr]).is_err(),
            "the PR's commit came along"
        );
        git_in(&["update-ref", "refs/pull/2/head", &pr]);
        git_in(&["tag", "v1.28.3"]);
        mirror(&mirrors, &location).unwrap();
        assert_eq!(
            refs(&path),
            "refs/heads/main\nrefs/tags/v1.28.2\nrefs/tags/v1.28.3"
        );

        // An older kiln's mirror of the same location.
        std::fs::remove_dir_all(&path).unwrap();
        let status = Command::new("git")
            .args(["clone", "--quiet", "--mirror", location.as_str()])
            .arg(&path)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(status.success());
        assert!(refs(&path).contains("refs/pull/2/head"));
        mirror(&mirrors, &location).unwrap();
        assert_eq!(
            refs(&path),
            "refs/heads/main\nrefs/tags/v1.28.2\nrefs/tags/v1.28.3"
        );
        let fetch = output(&path, &["config", "--get-all", "remote.origin.fetch"]).unwrap();
        assert_eq!(fetch, MIRROR_REFSPECS.join("\n"));
    }

    /// A mirror holding exactly the refs the remote listed is not fetched; any difference
    /// (a new tag, a moved branch, a ref the mirror should not have) fetches.
    #[test]
    fn a_mirror_matching_the_remote_s_listing_is_not_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        std::fs::create_dir(&origin).unwrap();
        let git_in = |args: &[&str]| test_git(&origin, args);
        git_in(&["init", "--quiet", "-b", "main"]);
        git_in(&["commit", "--quiet", "--allow-empty", "-m", "one"]);
        git_in(&["tag", "-a", "-m", "v1", "v1.28.2"]);
        git_in(&["update-ref", "refs/pull/1/head", "HEAD"]);
        let location = Location::parse_in(&origin.to_string_lossy(), Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");
        let listed = remote_refs(&location, &ALL_REFS).unwrap();
        assert_eq!(
            listed.refs.keys().map(String::as_str).collect::<Vec<_>>(),
            ["refs/heads/main", "refs/tags/v1.28.2"],
            "branches and tags, never pull refs"
        );
        let path = mirror_borrowing(&mirrors, &location, None, Some(&listed)).unwrap();
        assert_eq!(local_refs(&path).unwrap(), listed.refs);
        let tagged = git_in(&["rev-parse", "v1.28.2^{commit}"]);
        assert_eq!(tag_commits(&path).unwrap()["v1.28.2"], tagged);

        // The remote moves on; a listing taken before that is what the mirror holds: no fetch.
        git_in(&["commit", "--quiet", "--allow-empty", "-m", "two"]);
        mirror_borrowing(&mirrors, &location, None, Some(&listed)).unwrap();
        assert_eq!(
            local_refs(&path).unwrap(),
            listed.refs,
            "fetched though nothing was listed"
        );
        // The fresh listing differs: fetched.
        let fresh = remote_refs(&location, &ALL_REFS).unwrap();
        assert_ne!(fresh, listed);
        mirror_borrowing(&mirrors, &location, None, Some(&fresh)).unwrap();
        assert_eq!(local_refs(&path).unwrap(), fresh.refs);
        assert_eq!(
            packed_refs::packed_only(&path).as_ref(),
            Some(&fresh.refs),
            "a fetch leaves the mirror's refs packed, for the next comparison to read"
        );

        // Its refs as listed but its pack emptied by a power cut: not taken as held; the
        // fetch finds it damaged and it is cloned again.
        test_git(&path, &["repack", "-a", "-d", "-q"]);
        let pack = std::fs::read_dir(path.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pack"))
            .unwrap();
        std::fs::remove_file(&pack).unwrap();
        std::fs::File::create(&pack).unwrap();
        mirror_borrowing(&mirrors, &location, None, Some(&fresh)).unwrap();
        output(&path, &["fsck", "--no-progress"]).unwrap();
        assert_eq!(local_refs(&path).unwrap(), fresh.refs);

        // A ref the mirror must not keep makes it differ too, and the fetch drops it.
        test_git(
            &path,
            &["update-ref", "refs/pull/9/head", "refs/heads/main"],
        );
        mirror_borrowing(&mirrors, &location, None, Some(&fresh)).unwrap();
        assert_eq!(local_refs(&path).unwrap(), fresh.refs);

        // Listed under a prefix (a release's own tags), only the refs there count: a moved
        // branch elsewhere fetches nothing...
        let tags = remote_refs(&location, &["refs/tags/v1.28.2"]).unwrap();
        assert_eq!(tags.refs.keys().collect::<Vec<_>>(), ["refs/tags/v1.28.2"]);
        git_in(&["commit", "--quiet", "--allow-empty", "-m", "three"]);
        let (_, held) = sync_mirror(&mirrors, &location, None, Some(&tags)).unwrap();
        assert_eq!(held, tags.refs, "held as listed");
        assert_eq!(local_refs(&path).unwrap(), fresh.refs, "not fetched");
        // ...while a tag moved there fetches everything.
        git_in(&["tag", "-f", "-a", "-m", "v1 again", "v1.28.2"]);
        let retagged = remote_refs(&location, &["refs/tags/v1.28.2"]).unwrap();
        assert_ne!(retagged, tags);
        let (_, held) = sync_mirror(&mirrors, &location, None, Some(&retagged)).unwrap();
        let everything = remote_refs(&location, &ALL_REFS).unwrap();
        assert_eq!(held, everything.refs);
        assert_eq!(local_refs(&path).unwrap(), everything.refs);
    }

    /// `held_mirror` answers only for a mirror that needs nothing (no clone, fetch or
    /// repack): missing, differing or not yet borrowing, it changes nothing and says `None`.
    #[test]
    fn a_held_mirror_is_one_needing_nothing_and_finding_it_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_with_one_commit(dir.path());
        let location = Location::parse_in(&origin.to_string_lossy(), Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");
        let listed = remote_refs(&location, &ALL_REFS).unwrap();
        assert_eq!(
            held_mirror(&mirrors, &location, None, &listed).unwrap(),
            None
        );
        assert!(!mirrors.exists(), "nothing is cloned");

        let path = mirror_borrowing(&mirrors, &location, None, Some(&listed)).unwrap();
        assert_eq!(path, mirror_path(&mirrors, &location));
        let held = held_mirror(&mirrors, &location, None, &listed).unwrap();
        assert_eq!(
            held.as_ref(),
            Some(&path),
            "the mirror holds what was listed"
        );

        // The remote moved: not held, and the mirror is as it was.
        test_git(
            &origin,
            &["commit", "--quiet", "--allow-empty", "-m", "two"],
        );
        let moved = remote_refs(&location, &ALL_REFS).unwrap();
        assert_eq!(
            held_mirror(&mirrors, &location, None, &moved).unwrap(),
            None
        );
        assert_eq!(local_refs(&path).unwrap(), listed.refs);

        // A lender it does not borrow from yet needs a repack: not held, nothing repacked.
        let lender = dir.path().join("lender.git");
        test_git(dir.path(), &["init", "--quiet", "--bare", "lender.git"]);
        assert_eq!(
            held_mirror(&mirrors, &location, Some(&lender), &listed).unwrap(),
            None
        );
        assert!(!path.join("objects/info/alternates").exists());
    }

    /// The mirror settings read from a plain config file are git's own reading of it; a file
    /// git would read otherwise (an include, a quoted value) is left to git.
    #[test]
    fn plain_mirror_settings_are_read_as_git_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("m.git");
        test_git(dir.path(), &["init", "--quiet", "--bare", "m.git"]);
        let by_git = || {
            let mut get = git(&repo);
            get.args([
                "config",
                "--get-regexp",
                r"^(core\.sharedrepository|gc\.pruneexpire)$",
            ]);
            run(get, &repo)
                .map(|t| format!("{t}\n"))
                .unwrap_or_default()
        };
        assert_eq!(plain_settings(&repo).unwrap(), by_git(), "neither set");
        test_git(&repo, &["config", "core.sharedRepository", "0644"]);
        test_git(&repo, &["config", "gc.pruneExpire", "never"]);
        test_git(&repo, &["config", "remote.origin.url", "/somewhere"]);
        assert_eq!(plain_settings(&repo).unwrap(), by_git());
        assert_eq!(
            plain_settings(&repo).unwrap(),
            "core.sharedrepository 0644\ngc.pruneexpire never\n"
        );
        // Two values: both listed, in order (the last wins for the caller, as for git).
        test_git(&repo, &["config", "--add", "gc.pruneExpire", "now"]);
        assert_eq!(plain_settings(&repo).unwrap(), by_git());
        mirror_settings(&repo).unwrap();
        assert_eq!(
            plain_settings(&repo).unwrap(),
            "core.sharedrepository 0644\ngc.pruneexpire never\n"
        );

        let config = repo.join("config");
        let plain = std::fs::read_to_string(&config).unwrap();
        for odd in [
            "[include]\n\tpath = other\n",
            "[gc]\n\tpruneExpire = \"never\"\n",
            "[gc]\n\tpruneExpire = nev\\\ner\n",
        ] {
            std::fs::write(&config, format!("{plain}{odd}")).unwrap();
            assert_eq!(plain_settings(&repo), None, "{odd}");
        }
    }

    #[test]
    fn objects_are_read_in_one_batch_in_order_missing_ones_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        test_git(repo, &["init", "--quiet", "-b", "main"]);
        std::fs::create_dir(repo.join("d")).unwrap();
        std::fs::write(repo.join("go.mod"), "module x\n\ngo 1.21\n").unwrap();
        std::fs::write(repo.join("d/bin"), b"\0\n\xff two lines\n").unwrap();
        test_git(repo, &["add", "."]);
        test_git(repo, &["commit", "--quiet", "-m", "one"]);
        let specs: Vec<String> = ["HEAD:go.mod", "HEAD:nope", "HEAD:d/bin", "HEAD:go.mod"]
            .map(str::to_owned)
            .to_vec();
        let read = read_objects(repo, &specs).unwrap();
        assert_eq!(
            read,
            [
                Some(b"module x\n\ngo 1.21\n".to_vec()),
                None,
                Some(b"\0\n\xff two lines\n".to_vec()),
                Some(b"module x\n\ngo 1.21\n".to_vec()),
            ]
        );
        assert!(read_objects(repo, &["HEAD:a\nHEAD:b".to_owned()]).is_err());
        assert!(read_objects(repo, &[]).unwrap().is_empty());
    }

    /// The number of objects a repository holds itself (loose and packed, not borrowed).
    fn own_objects(repo: &Path) -> u64 {
        output(repo, &["count-objects", "-v"])
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("count: ").or(l.strip_prefix("in-pack: ")))
            .map(|n| n.parse::<u64>().unwrap())
            .sum()
    }

    #[test]
    fn the_fork_mirror_holds_only_what_upstream_lacks_and_fetches_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let (upstream, fork) = (dir.path().join("upstream"), dir.path().join("fork"));
        std::fs::create_dir(&upstream).unwrap();
        test_git(&upstream, &["init", "--quiet", "-b", "main"]);
        for n in 0..20 {
            std::fs::write(upstream.join(format!("f{n}")), format!("{n}\n")).unwrap();
            test_git(&upstream, &["add", "."]);
            test_git(&upstream, &["commit", "--quiet", "-m", &format!("c{n}")]);
        }
        test_git(&upstream, &["tag", "v1.28.2"]);
        test_git(dir.path(), &["clone", "--quiet", "upstream", "fork"]);
        std::fs::write(fork.join("patch"), "k3s\n").unwrap();
        test_git(&fork, &["add", "."]);
        test_git(&fork, &["commit", "--quiet", "-m", "patch"]);
        test_git(&fork, &["tag", "v1.28.2-k3s1"]);
        let at = |p: &Path| Location::parse_in(&p.to_string_lossy(), Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");

        // An older kiln's fork mirror: whole.
        let fork_mirror = mirror(&mirrors, &at(&fork)).unwrap();
        let whole = own_objects(&fork_mirror);
        assert!(whole >= 60, "{whole}");
        let upstream_mirror = mirror(&mirrors, &at(&upstream)).unwrap();
        let again = mirror_borrowing(&mirrors, &at(&fork), Some(&upstream_mirror), None).unwrap();
        assert_eq!(again, fork_mirror);
        // The patch commit, its tree and its blob are the fork's own.
        assert_eq!(own_objects(&fork_mirror), 3);
        let tag = resolve_commit(&fork_mirror, "v1.28.2-k3s1").unwrap();
        assert_eq!(
            read_file(&fork_mirror, &tag, "f0").unwrap().as_deref(),
            Some("0\n")
        );
        assert_eq!(
            output(&upstream_mirror, &["config", "gc.pruneExpire"]).unwrap(),
            "never"
        );

        // A new fork mirror borrows from its first clone; later fetches bring only new objects.
        std::fs::remove_dir_all(&fork_mirror).unwrap();
        mirror_borrowing(&mirrors, &at(&fork), Some(&upstream_mirror), None).unwrap();
        // (A received pack carries the bases of its deltas: upstream's root tree here.)
        let cloned = own_objects(&fork_mirror);
        assert!((3..=4).contains(&cloned), "{cloned}");
        std::fs::write(fork.join("patch2"), "k3s2\n").unwrap();
        test_git(&fork, &["add", "."]);
        test_git(&fork, &["commit", "--quiet", "-m", "patch 2"]);
        mirror_borrowing(&mirrors, &at(&fork), Some(&upstream_mirror), None).unwrap();
        assert_eq!(own_objects(&fork_mirror), cloned + 3);
        let mut fsck = git(&fork_mirror);
        fsck.args(["fsck", "--connectivity-only", "--no-progress"]);
        run(fsck, &fork_mirror).unwrap();
    }

    /// A captain's umask 077 made the mirror private: it is opened up for the steps that
    /// read it in place (a release under umask 077 is the reproducible test's).
    #[test]
    fn mirrors_are_readable_by_steps_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let origin = origin_with_one_commit(dir.path());
        let at = Location::parse_in(&origin.to_string_lossy(), Path::new("/")).unwrap();
        let mirrors = dir.path().join("mirrors");
        let path = mirror(&mirrors, &at).unwrap();
        // As an older kiln under umask 077 left it.
        let status = Command::new("chmod")
            .args(["-R", "go-rwx"])
            .arg(path.join("objects"))
            .status()
            .unwrap();
        assert!(status.success());
        test_git(&path, &["config", "--unset", "core.sharedRepository"]);
        // And a second, later value that would let git prune what the fork borrows.
        test_git(&path, &["config", "--add", "gc.pruneExpire", "now"]);
        mirror(&mirrors, &at).unwrap();
        assert_eq!(
            test_git(&path, &["config", "--get-all", "gc.pruneExpire"]),
            "never"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&path.join("objects")) & 0o005, 0o005);
        // Other users of the host stay out of the mirrors' directory.
        assert_eq!(mode(&mirrors) & 0o077, 0);
        let mut files = vec![path.join("objects")];
        let mut checked = 0;
        while let Some(d) = files.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap().path();
                if e.is_dir() {
                    files.push(e);
                } else {
                    assert_eq!(mode(&e) & 0o004, 0o004, "{}", e.display());
                    checked += 1;
                }
            }
        }
        assert!(checked > 0);
    }

    /// A bare repository's default branch is its HEAD; a work tree's is the one its origin
    /// names, never the branch checked out there; without an origin it has none.
    #[test]
    fn a_work_tree_s_default_branch_is_its_origin_s_not_its_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let run_git = |args: &[&str]| {
            test_git(dir.path(), args);
        };
        run_git(&["init", "--quiet", "-b", "main", "seed"]);
        run_git(&[
            "-C",
            "seed",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "one",
        ]);
        run_git(&["clone", "--quiet", "--bare", "seed", "origin.git"]);
        run_git(&["clone", "--quiet", "origin.git", "work"]);
        run_git(&["-C", "work", "checkout", "--quiet", "-b", "v1.28.2-k3s1"]);
        let at = |name: &str| {
            Location::parse_in(&dir.path().join(name).to_string_lossy(), Path::new("/")).unwrap()
        };
        assert_eq!(
            default_branch(&at("origin.git")).unwrap().as_deref(),
            Some("main")
        );
        assert_eq!(
            default_branch(&at("work")).unwrap().as_deref(),
            Some("main")
        );
        // The seed has no origin: what it has checked out says nothing.
        run_git(&["-C", "seed", "checkout", "--quiet", "-b", "feature"]);
        assert_eq!(default_branch(&at("seed")).unwrap(), None);
    }

    /// Empties every file under `dir`, as a power cut does to files whose data was never
    /// synced; returns how many.
    fn empty_files(dir: &Path) -> usize {
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                count += empty_files(&entry.path());
            } else if kind.is_file() {
                // A new empty file renamed over it: the mirror's objects may be hard links to
                // the origin's, which must stay whole.
                let empty = dir.join(".emptied");
                std::fs::File::create(&empty).unwrap();
                std::fs::rename(&empty, entry.path()).unwrap();
                count += 1;
            }
        }
        count
    }

    #[test]
    fn allowlist_accepts_release_names_and_refuses_the_rest() {
        for ok in [
            "v1.28.2",
            "v1.28.2-k3s1",
            "release-1.28",
            "staging/src/k8s.io/api/v1.28.2-k3s1",
            "v1.28.2+k3s1",
            "HEAD",
            "0123abcd",
        ] {
            assert!(validate_rev(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=evil",
            "a..b",
            "a b",
            "a;rm",
            "$(x)",
            "`x`",
            "/abs",
            "a//b",
            "x.lock",
            "a/",
            ".hidden",
            "a\nb",
            "v1;touch${IFS}pwned",
            "v1$(id)",
            // A right-to-left override makes `v1.28.2-k3s1` display as something else.
            "v1.28.2-\u{202e}1s3k",
            "v1.28.2\u{200b}",
        ] {
            assert!(validate_rev(bad).is_err(), "{bad:?}");
        }
        let long = format!("v{}", "1".repeat(299));
        assert!(validate_rev(&long).is_err(), "a 300-character name");
        assert!(validate_rev(&long[..200]).is_ok(), "200 characters pass");
    }
}
