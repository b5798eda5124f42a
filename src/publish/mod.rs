//! Publishing a locked release and checking what is published: the fork's tags and the k3s
//! branch against a remote, by one `git ls-remote` each. A published tag is immutable in
//! practice (Go's checksum database remembers the first content it saw), so nothing here ever
//! moves a ref: there is no force.

use std::collections::BTreeMap;

pub(crate) mod images;
pub(crate) mod status;

use crate::git::{self, GitError, Location, RemoteRefs};
use crate::lockfile::Lockfile;
use crate::store::LocalStore;

/// How one of the release's refs stands on a remote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub(crate) enum RefState {
    /// At the locked commit.
    Present,
    /// Not on the remote.
    Missing,
    /// On the remote at another commit.
    Moved {
        /// Where the remote has it.
        remote: String,
    },
    /// On the remote with the release's name, but not in the lockfile.
    Extra {
        /// Where the remote has it.
        remote: String,
    },
    /// On the remote with the release's name and characters kiln never passes to a command.
    Unsafe,
}

/// One ref of the comparison.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct RefCheck {
    /// The name (escaped when unsafe).
    pub(crate) name: String,
    /// The locked commit (none for extra and unsafe refs).
    pub(crate) locked: Option<String>,
    /// Its state.
    #[serde(flatten)]
    pub(crate) state: RefState,
}

/// The release's tags against a remote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TagReport {
    /// The remote.
    pub(crate) remote: String,
    /// Every locked tag, then extra and unsafe ones, by name.
    pub(crate) tags: Vec<RefCheck>,
}

/// Exit code of `kiln verify-tags` when locked tags are missing (not pushed yet) and nothing
/// else is wrong.
pub(crate) const EXIT_MISSING: u8 = 4;
/// Exit code of `kiln verify-tags` when the remote disagrees with the lock: a tag moved, or
/// tags of the release exist that the lock does not have.
pub(crate) const EXIT_DIVERGED: u8 = 5;

impl TagReport {
    /// Count of tags in `state`'s variant.
    #[must_use]
    pub(crate) fn count(&self, pred: impl Fn(&RefState) -> bool) -> usize {
        self.tags.iter().filter(|t| pred(&t.state)).count()
    }

    /// 0 when the remote holds exactly the locked tags, [`EXIT_MISSING`] when some are only
    /// missing, [`EXIT_DIVERGED`] when any moved, extra or unsafe one exists.
    #[must_use]
    pub(crate) fn exit_code(&self) -> u8 {
        if self.count(|s| {
            matches!(
                s,
                RefState::Moved { .. } | RefState::Extra { .. } | RefState::Unsafe
            )
        }) > 0
        {
            EXIT_DIVERGED
        } else if self.count(|s| *s == RefState::Missing) > 0 {
            EXIT_MISSING
        } else {
            0
        }
    }
}

/// Compares the lock's tags with what a remote holds.
#[must_use]
pub(crate) fn compare_tags(lock: &Lockfile, remote: &Location, refs: &RemoteRefs) -> TagReport {
    let fork_tag = lock.release.new_fork_tag();
    let mut tags: Vec<RefCheck> = lock
        .tags
        .iter()
        .map(|(name, commit)| {
            let state = match refs.refs.get(name) {
                None => RefState::Missing,
                Some(at) if at == commit => RefState::Present,
                Some(at) => RefState::Moved { remote: at.clone() },
            };
            RefCheck {
                name: name.clone(),
                locked: Some(commit.clone()),
                state,
            }
        })
        .collect();
    for (name, at) in &refs.refs {
        if fork_tag.names(name) && !lock.tags.contains_key(name) {
            tags.push(RefCheck {
                name: name.clone(),
                locked: None,
                state: RefState::Extra { remote: at.clone() },
            });
        }
    }
    for name in &refs.refused {
        if name.ends_with(&fork_tag.to_string()) {
            tags.push(RefCheck {
                name: name.clone(),
                locked: None,
                state: RefState::Unsafe,
            });
        }
    }
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    TagReport {
        remote: remote.to_string(),
        tags,
    }
}

/// `kiln verify-tags`: one `git ls-remote` of `remote`, compared with the lock.
pub(crate) fn verify_tags(lock: &Lockfile, remote: &Location) -> Result<TagReport, GitError> {
    let refs = git::ls_remote(remote, "tags")?;
    Ok(compare_tags(lock, remote, &refs))
}

/// Why a push did not happen or did not finish.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub(crate) enum PushError {
    /// The remote disagrees with the lock; nothing was pushed.
    #[error("refusing to push to {remote}: {}", .refs.join("; "))]
    #[diagnostic(
        code(kiln::push::refused),
        help(
            "kiln never moves a published ref (Go's checksum database already remembers it); \
             find out who published these, and cut a new -k3sN release instead of replacing them"
        )
    )]
    Refused {
        /// The remote.
        remote: String,
        /// Each disagreement, described.
        refs: Vec<String>,
    },
    /// A result bundle is not in the store.
    #[error("the result bundle {digest} ({what}) is not in the store")]
    #[diagnostic(
        code(kiln::push::no_bundle),
        help(
            "run the same `kiln release` again with this store: cached steps restore it in seconds"
        )
    )]
    NoBundle {
        /// Which bundle.
        what: &'static str,
        /// Its digest.
        digest: crate::hash::Digest,
    },
    /// The bundle does not hold what the lock says.
    #[error("the {what} bundle does not hold {name} at {commit}: {reason}")]
    #[diagnostic(code(kiln::push::bundle_mismatch))]
    BundleMismatch {
        /// Which bundle.
        what: &'static str,
        /// The ref.
        name: String,
        /// The locked commit.
        commit: String,
        /// What git said.
        reason: String,
    },
    /// After pushing, the remote still does not hold the release exactly.
    #[error("after pushing, {remote} does not hold the release: {}", .refs.join("; "))]
    #[diagnostic(code(kiln::push::unverified))]
    Unverified {
        /// The remote.
        remote: String,
        /// What is wrong.
        refs: Vec<String>,
    },
    /// The push itself failed (the network, the remote refused) and the remote, read back,
    /// does not hold the release.
    #[error(
        "the push to {remote} failed; read back, the remote lacks {lacking} of its {refs} refs"
    )]
    #[diagnostic(
        code(kiln::push::failed),
        help(
            "the push is atomic: the remote took all of these refs or none. `kiln verify-tags` \
             shows what it holds; run `kiln push` again (it pushes only what is missing)"
        )
    )]
    Failed {
        /// The remote.
        remote: String,
        /// How many of the batch's refs it lacks.
        lacking: usize,
        /// How many refs the batch pushed.
        refs: usize,
        /// What git said.
        #[source]
        #[diagnostic_source]
        source: GitError,
    },
    /// git failed (the remote refused, say).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Git(#[from] GitError),
    /// Store trouble.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Local trouble.
    #[error("cannot {action}")]
    Io {
        /// What.
        action: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What one push did to one ref.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Pushed {
    /// Full ref name.
    pub(crate) name: String,
    /// Its commit.
    pub(crate) commit: String,
    /// `pushed`, or `skipped` (already at the locked commit).
    pub(crate) action: &'static str,
}

/// What `kiln push` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PushReport {
    /// The fork's tags (when a fork remote was given).
    pub(crate) fork: Vec<Pushed>,
    /// The k3s branch (when a k3s remote was given).
    pub(crate) k3s: Vec<Pushed>,
}

fn describe(check: &RefCheck) -> Option<String> {
    match &check.state {
        RefState::Present | RefState::Missing => None,
        RefState::Moved { remote } => Some(format!(
            "{} is at {remote}, the lock has {}",
            check.name,
            check.locked.as_deref().unwrap_or("?")
        )),
        RefState::Extra { remote } => Some(format!(
            "{} exists at {remote} but is not in the lock",
            check.name
        )),
        RefState::Unsafe => Some(format!(
            "\"{}\" has characters kiln never passes to a command",
            check.name
        )),
    }
}

/// The refs to push to one remote: (full name, commit), and where their objects are.
struct Batch<'a> {
    remote: &'a Location,
    what: &'static str,
    bundle: crate::hash::Digest,
    refs: Vec<(String, String)>,
}

/// Plans the fork's side: refuses on any disagreement, else the missing tags.
fn plan_fork<'a>(
    lock: &Lockfile,
    remote: &'a Location,
) -> Result<(Batch<'a>, Vec<Pushed>), PushError> {
    let report = verify_tags(lock, remote)?;
    let refused: Vec<String> = report.tags.iter().filter_map(describe).collect();
    if !refused.is_empty() {
        return Err(PushError::Refused {
            remote: remote.to_string(),
            refs: refused,
        });
    }
    let mut refs = Vec::new();
    let mut done = Vec::new();
    for check in &report.tags {
        let commit = check.locked.clone().unwrap_or_default();
        let name = format!("refs/tags/{}", check.name);
        if check.state == RefState::Missing {
            done.push(Pushed {
                name: name.clone(),
                commit: commit.clone(),
                action: "pushed",
            });
            refs.push((name, commit));
        } else {
            done.push(Pushed {
                name,
                commit,
                action: "skipped",
            });
        }
    }
    let bundle = bundle_of(crate::release::tag_bundle(lock), "tag")?;
    Ok((
        Batch {
            remote,
            what: "tag",
            bundle,
            refs,
        },
        done,
    ))
}

/// Plans the k3s side: the branch must be absent or already at the locked commit.
fn plan_k3s<'a>(
    lock: &Lockfile,
    remote: &'a Location,
) -> Result<(Batch<'a>, Vec<Pushed>), PushError> {
    let heads = git::ls_remote(remote, "heads")?;
    let branch = &lock.k3s.branch;
    let name = format!("refs/heads/{branch}");
    let commit = lock.k3s.commit.clone();
    let bundle = bundle_of(crate::release::k3s_bundle(lock), "k3s")?;
    match heads.refs.get(branch) {
        Some(at) if *at == commit => Ok((
            Batch {
                remote,
                what: "k3s",
                bundle,
                refs: Vec::new(),
            },
            vec![Pushed {
                name,
                commit,
                action: "skipped",
            }],
        )),
        Some(at) => Err(PushError::Refused {
            remote: remote.to_string(),
            refs: vec![format!("branch {branch} is at {at}, the lock has {commit}")],
        }),
        None => Ok((
            Batch {
                remote,
                what: "k3s",
                bundle,
                refs: vec![(name.clone(), commit.clone())],
            },
            vec![Pushed {
                name,
                commit,
                action: "pushed",
            }],
        )),
    }
}

fn bundle_of(
    bundle: Option<crate::hash::Digest>,
    what: &'static str,
) -> Result<crate::hash::Digest, PushError> {
    bundle.ok_or_else(|| PushError::BundleMismatch {
        what,
        name: "bundle".into(),
        commit: String::new(),
        reason: "the lockfile records no such step output".into(),
    })
}

/// Pushes one batch: its bundle is fetched into a scratch repository, every ref is checked to
/// be at the locked commit there, then one atomic push.
fn push_batch(store: &LocalStore, batch: &Batch<'_>) -> Result<(), PushError> {
    if batch.refs.is_empty() {
        return Ok(());
    }
    let io = |action| move |source| PushError::Io { action, source };
    let scratch = store.scratch_dir("kiln-push-")?;
    let bundle = scratch.path().join("results.bundle");
    if !store.export_sync(&batch.bundle, &bundle)? {
        return Err(PushError::NoBundle {
            what: batch.what,
            digest: batch.bundle,
        });
    }
    let repo = scratch.path().join("repo.git");
    git::output(scratch.path(), &["init", "--quiet", "--bare", "repo.git"])?;
    // The bundles are thin: their prerequisites (the new upstream commit, the k3s release
    // branch) are in the store's mirrors, which the scratch repository borrows objects from.
    let mut alternates = String::new();
    if let Ok(entries) = std::fs::read_dir(store.git_dir()) {
        for entry in entries.flatten() {
            let objects = entry.path().join("objects");
            if objects.is_dir() {
                alternates.push_str(&objects.to_string_lossy());
                alternates.push('\n');
            }
        }
    }
    std::fs::write(repo.join("objects/info/alternates"), alternates)
        .map_err(io("write the scratch repository's alternates"))?;
    git::fetch_bundle(&repo, &bundle, &batch.refs).map_err(|e| PushError::BundleMismatch {
        what: batch.what,
        name: format!("{} refs", batch.refs.len()),
        commit: "their locked commits".into(),
        reason: match e {
            GitError::Failed { stderr, .. } => stderr,
            other => other.to_string(),
        },
    })?;
    let names: Vec<String> = batch.refs.iter().map(|(n, _)| n.clone()).collect();
    git::push_atomic(&repo, batch.remote, &names)?;
    Ok(())
}

/// `kiln push`: checks both remotes against the lock first (any moved, extra or unsafe ref →
/// refused, nothing pushed), pushes the fork's missing tags in one atomic push, then the k3s
/// branch, then checks the fork's tags again.
pub(crate) fn push(
    lock: &Lockfile,
    store: &LocalStore,
    fork_remote: Option<&Location>,
    k3s_remote: Option<&Location>,
) -> Result<PushReport, PushError> {
    let fork = fork_remote.map(|r| plan_fork(lock, r)).transpose()?;
    let k3s = k3s_remote.map(|r| plan_k3s(lock, r)).transpose()?;
    // Every bundle needed is in the store before anything is pushed: a missing k3s bundle must
    // not leave the fork's tags published and the branch not.
    for (batch, _) in fork.iter().chain(k3s.iter()) {
        if !batch.refs.is_empty() && !store.contains_sync(&batch.bundle) {
            return Err(PushError::NoBundle {
                what: batch.what,
                digest: batch.bundle,
            });
        }
    }
    let mut report = PushReport::default();
    if let Some((batch, mut done)) = fork {
        let pushed = push_batch(store, &batch);
        // The push's own error comes first when the remote cannot be read after it.
        let after = match verify_tags(lock, batch.remote) {
            Ok(after) => after,
            Err(error) => {
                pushed?;
                return Err(error.into());
            }
        };
        let wrong: Vec<String> = after
            .tags
            .iter()
            .filter(|t| t.state != RefState::Present)
            .map(|t| describe(t).unwrap_or_else(|| format!("{} is missing", t.name)))
            .collect();
        settle(pushed, wrong, &batch, &mut done)?;
        report.fork = done;
    }
    if let Some((batch, mut done)) = k3s {
        let pushed = push_batch(store, &batch);
        let heads = match git::ls_remote(batch.remote, "heads") {
            Ok(heads) => heads,
            Err(error) => {
                pushed?;
                return Err(error.into());
            }
        };
        let wrong = if heads.refs.get(&lock.k3s.branch) == Some(&lock.k3s.commit) {
            Vec::new()
        } else {
            vec![format!(
                "branch {} is not at {}",
                lock.k3s.branch, lock.k3s.commit
            )]
        };
        settle(pushed, wrong, &batch, &mut done)?;
        report.k3s = done;
    }
    Ok(report)
}

/// What a batch's push came to, from the push's result and what the remote holds after it
/// (`wrong`: every locked ref not at its locked commit there). A push that failed while the
/// remote ended up holding exactly the locked refs lost a race with another push of the same
/// lock (git refuses to create a ref that appeared meanwhile), or lost its connection after the
/// remote had taken the refs: either way they are there, at the locked commits (read back from
/// the remote, never assumed), so the push is done and they are reported as skipped.
fn settle(
    pushed: Result<(), PushError>,
    wrong: Vec<String>,
    batch: &Batch<'_>,
    done: &mut [Pushed],
) -> Result<(), PushError> {
    match (pushed, wrong.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Err(error), true) => {
            tracing::warn!(
                remote = %batch.remote,
                %error,
                "the push failed, but the remote holds every ref at its locked commit (another \
                 push landed them first, or the connection dropped after the remote took them); \
                 counted as done"
            );
            for pushed in done.iter_mut().filter(|p| p.action == "pushed") {
                pushed.action = "skipped";
            }
            Ok(())
        }
        (Err(PushError::Git(source)), false) => Err(PushError::Failed {
            remote: batch.remote.to_string(),
            lacking: wrong.len(),
            refs: batch.refs.len(),
            source,
        }),
        (Err(error), false) => Err(error),
        (Ok(()), false) => Err(PushError::Unverified {
            remote: batch.remote.to_string(),
            refs: wrong,
        }),
    }
}

/// The `git push` lines of the runbook's push.sh: the fork's tags (sorted, as `LC_ALL=C`
/// sorts) to `fork_remote`, then the k3s branch to `k3s_remote`. Remotes are quoted for a
/// POSIX shell when they need it.
#[must_use]
pub(crate) fn push_lines(lock: &Lockfile, fork_remote: &str, k3s_remote: &str) -> Vec<String> {
    let (fork, k3s) = (shell_word(fork_remote), shell_word(k3s_remote));
    let mut lines: Vec<String> = lock
        .tags
        .keys()
        .map(|t| format!("git push {fork} {t}"))
        .collect();
    lines.sort();
    lines.push(format!("git push {k3s} {}", lock.k3s.branch));
    lines
}

/// `word` as one POSIX shell word: as is when it holds only safe characters (or is a `$VAR`
/// placeholder), else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b);
    let placeholder = word.strip_prefix('$').is_some_and(|name| {
        name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    });
    if placeholder || (!word.is_empty() && word.bytes().all(safe)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Names of the lock's tags by state, for summaries.
#[must_use]
pub(crate) fn by_state(report: &TagReport) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for t in &report.tags {
        let key = match t.state {
            RefState::Present => "present",
            RefState::Missing => "missing",
            RefState::Moved { .. } => "moved",
            RefState::Extra { .. } => "extra",
            RefState::Unsafe => "unsafe",
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(name: &str) -> Location {
        Location::parse_in(name, std::path::Path::new("/remotes")).unwrap()
    }

    #[test]
    fn push_lines_quote_what_a_shell_would_split() {
        let lock = crate::lockfile::sample();
        let lines = push_lines(&lock, "$REMOTE", "/srv/my repos/k3s.git");
        assert_eq!(
            lines[0],
            "git push $REMOTE staging/src/k8s.io/api/v1.28.2-k3s1"
        );
        assert_eq!(
            lines.last().unwrap(),
            "git push '/srv/my repos/k3s.git' v1.28.2-k3s1"
        );
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(
            shell_word("git@github.com:k3s-io/k3s.git"),
            "git@github.com:k3s-io/k3s.git"
        );
        assert_eq!(shell_word("$(reboot)"), "'$(reboot)'");
        assert_eq!(shell_word("$K3S_REMOTE"), "$K3S_REMOTE");
    }

    fn refs(pairs: &[(&str, &str)], refused: &[&str]) -> RemoteRefs {
        RemoteRefs {
            refs: pairs
                .iter()
                .map(|(n, c)| ((*n).to_owned(), (*c).to_owned()))
                .collect(),
            refused: refused.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn classifies_present_missing_moved_extra_and_unsafe() {
        let lock = crate::lockfile::sample();
        let tags: Vec<(String, String)> = lock
            .tags
            .iter()
            .map(|(t, c)| (t.clone(), c.clone()))
            .collect();
        let other = "f".repeat(40);
        let remote = refs(
            &[
                (&tags[0].0, &tags[0].1),
                (&tags[1].0, &other),
                ("staging/src/k8s.io/extra/v1.28.2-k3s1", &other),
                ("v1.28.2-k3s10", &other),
                ("v1.28.1-k3s1", &other),
            ],
            &["x$(touch pwned)/v1.28.2-k3s1", "unrelated;tag"],
        );
        let report = compare_tags(&lock, &location("remote"), &remote);
        let state = |name: &str| {
            report
                .tags
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.state.clone())
        };
        assert_eq!(state(&tags[0].0), Some(RefState::Present));
        assert_eq!(
            state(&tags[1].0),
            Some(RefState::Moved {
                remote: other.clone()
            })
        );
        assert_eq!(state(&tags[2].0), Some(RefState::Missing));
        assert_eq!(
            state("staging/src/k8s.io/extra/v1.28.2-k3s1"),
            Some(RefState::Extra { remote: other })
        );
        assert_eq!(
            state("x$(touch pwned)/v1.28.2-k3s1"),
            Some(RefState::Unsafe)
        );
        // Another release's tags and unrelated names are none of this release's business.
        assert_eq!(state("v1.28.2-k3s10"), None);
        assert_eq!(state("v1.28.1-k3s1"), None);
        assert_eq!(state("unrelated;tag"), None);
        assert_eq!(report.exit_code(), EXIT_DIVERGED);
    }

    #[test]
    fn exit_codes_separate_missing_from_diverged() {
        let lock = crate::lockfile::sample();
        let all: Vec<(&str, &str)> = lock
            .tags
            .iter()
            .map(|(t, c)| (t.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            compare_tags(&lock, &location("r"), &refs(&all, &[])).exit_code(),
            0
        );
        assert_eq!(
            compare_tags(&lock, &location("r"), &refs(&all[1..], &[])).exit_code(),
            EXIT_MISSING
        );
        assert_eq!(
            compare_tags(&lock, &location("r"), &refs(&[], &[])).exit_code(),
            EXIT_MISSING
        );
    }
}
