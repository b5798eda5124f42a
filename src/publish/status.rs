//! `kiln status`: the runbook of one release as a checklist. Every line is measured when it is
//! asked for — the lockfile read and checked, remotes asked with `git ls-remote`, the registry
//! asked for each manifest, the channel files parsed — never taken from a record of what kiln
//! did earlier (the one exception, "verified", is a note `kiln verify` leaves in the store for
//! the lockfile's exact bytes).

use std::path::{Path, PathBuf};

use crate::git::{self, Location};
use crate::lockfile::Lockfile;
use crate::names::{ForkTag, K3sVersion, rcs_among};
use crate::release::verify::VerifiedNote;
use crate::release::{listed_versions, stable_latest};
use crate::store::LocalStore;

use super::images::{self, ImageState};
use super::{EXIT_DIVERGED, EXIT_MISSING, RefState, compare_tags};

/// How one line stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mark {
    /// Done, as measured.
    Done,
    /// Not done yet.
    Todo,
    /// Something disagrees with the release (a moved tag, a broken file): never paper over it.
    Wrong,
    /// Could not be measured (a source not given, or not answering).
    Unknown,
}

/// One line of the checklist.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Item {
    /// A stable identifier for machines.
    pub(crate) id: &'static str,
    /// The line's title.
    pub(crate) title: String,
    /// Its state.
    pub(crate) mark: Mark,
    /// What was measured.
    pub(crate) detail: String,
    /// What to run next, when something is left to do.
    pub(crate) next: Option<String>,
}

/// Where each line is measured.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    /// The release's fork tag (its version and suffix).
    pub(crate) fork_tag: ForkTag,
    /// The lockfile.
    pub(crate) lockfile: PathBuf,
    /// The fork's remote.
    pub(crate) fork_remote: Option<Location>,
    /// k3s's remote (the release branch, RC and GA tags).
    pub(crate) k3s_remote: Option<Location>,
    /// k3s's repository, for RC/GA tags when no remote is given.
    pub(crate) k3s: Option<Location>,
    /// The image registry.
    pub(crate) registry: String,
    /// KDM's channels.yaml.
    pub(crate) kdm: Option<PathBuf>,
    /// k3s's channel.yaml.
    pub(crate) channel: Option<PathBuf>,
}

/// The exit code of a checklist: 0 all done, [`EXIT_MISSING`] something left to do or not
/// measured, [`EXIT_DIVERGED`] something wrong.
#[must_use]
pub(crate) fn exit_code(items: &[Item]) -> u8 {
    if items.iter().any(|i| i.mark == Mark::Wrong) {
        EXIT_DIVERGED
    } else if items.iter().any(|i| i.mark != Mark::Done) {
        EXIT_MISSING
    } else {
        0
    }
}

fn item(id: &'static str, title: impl Into<String>, mark: Mark, detail: impl Into<String>) -> Item {
    Item {
        id,
        title: title.into(),
        mark,
        detail: detail.into(),
        next: None,
    }
}

impl Item {
    fn next(mut self, command: impl Into<String>) -> Self {
        self.next = Some(command.into());
        self
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Measures every line.
///
/// # Panics
///
/// Only if a blocking `git ls-remote` task panics, which it does not.
pub(crate) async fn status(sources: &Sources, store: &LocalStore) -> Vec<Item> {
    let tag = sources.fork_tag;
    let (version, suffix) = (tag.k8s, tag.suffix);
    let fork_tag = tag.to_string();
    let ga = tag.ga().to_string();
    let lock_name = sources.lockfile.display().to_string();
    let mut items = Vec::new();

    // The remotes are asked at once, each `git ls-remote` on a blocking thread: three round
    // trips to a forge cost one.
    let ask = |location: Option<Location>, namespace: &'static str| async move {
        match location {
            None => None,
            Some(location) => {
                let refs = tokio::task::spawn_blocking({
                    let location = location.clone();
                    move || git::ls_remote(&location, namespace)
                })
                .await
                .expect("ls-remote does not panic");
                Some((location, refs))
            }
        }
    };
    let tags_at = sources.k3s_remote.clone().or_else(|| sources.k3s.clone());
    let (fork_tags, k3s_heads, k3s_tags) = tokio::join!(
        ask(sources.fork_remote.clone(), "tags"),
        ask(sources.k3s_remote.clone(), "heads"),
        ask(tags_at, "tags"),
    );

    // The lockfile: built.
    let lock = match Lockfile::read_with_digest(&sources.lockfile) {
        Ok((lock, _)) if lock.release.new_fork_tag() != tag => {
            items.push(item(
                "built",
                "fork tags built",
                Mark::Wrong,
                format!(
                    "{lock_name} is the lock of {}, not {fork_tag}",
                    lock.release.new_fork_tag()
                ),
            ));
            None
        }
        Ok((lock, digest)) => {
            // Built here when every locked step's record is in this store.
            let in_store = lock
                .steps
                .values()
                .filter(|step| matches!(store.record_sync(&step.key), Ok(Some(_))))
                .count();
            items.push(item(
                "built",
                "fork tags built",
                Mark::Done,
                format!(
                    "{lock_name}: {} tags, k3s {} on {}, {} artifact(s){}",
                    lock.tags.len(),
                    short(&lock.k3s.commit),
                    lock.k3s.branch,
                    lock.artifacts.len(),
                    if in_store == lock.steps.len() {
                        String::new()
                    } else {
                        format!(
                            "; {in_store}/{} of its steps in this store (built elsewhere)",
                            lock.steps.len()
                        )
                    }
                ),
            ));
            Some((lock, digest))
        }
        Err(crate::lockfile::LockfileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            items.push(
                item(
                    "built",
                    "fork tags built",
                    Mark::Todo,
                    format!("no lockfile at {lock_name}"),
                )
                .next(format!(
                    "kiln release --old vX.Y.Z --new {version} --new-suffix {suffix}"
                )),
            );
            None
        }
        Err(error) => {
            items.push(item(
                "built",
                "fork tags built",
                Mark::Wrong,
                error.to_string(),
            ));
            None
        }
    };
    let lock_arg = lock_name.clone();
    let need_lock = |id, title: &str| {
        item(
            id,
            title,
            Mark::Unknown,
            "needs the release's lockfile".to_owned(),
        )
    };

    // The fork's tags on its remote: pushed.
    items.push(match (&lock, &fork_tags) {
        (None, _) => need_lock("pushed", "fork tags pushed"),
        (Some(_), None) => item(
            "pushed",
            "fork tags pushed",
            Mark::Unknown,
            "no fork remote given (--remote URL)",
        ),
        (Some((lock, _)), Some((remote, refs))) => match refs {
            Err(error) => item(
                "pushed",
                "fork tags pushed",
                Mark::Unknown,
                format!("cannot ask {remote}: {error}"),
            ),
            Ok(refs) => {
                let report = compare_tags(lock, remote, refs);
                let present = report.count(|s| *s == RefState::Present);
                let missing = report.count(|s| *s == RefState::Missing);
                match report.exit_code() {
                    0 => item(
                        "pushed",
                        "fork tags pushed",
                        Mark::Done,
                        format!(
                            "{remote}: {present}/{} tags at the locked commits",
                            lock.tags.len()
                        ),
                    ),
                    EXIT_MISSING => item(
                        "pushed",
                        "fork tags pushed",
                        Mark::Todo,
                        format!(
                            "{remote}: {present}/{} tags, {missing} missing",
                            lock.tags.len()
                        ),
                    )
                    .next(format!("kiln push {lock_arg} --remote {remote}")),
                    _ => item(
                        "pushed",
                        "fork tags pushed",
                        Mark::Wrong,
                        format!(
                            "{remote} disagrees with the lock: {} moved, {} extra, {} unsafe",
                            report.count(|s| matches!(s, RefState::Moved { .. })),
                            report.count(|s| matches!(s, RefState::Extra { .. })),
                            report.count(|s| *s == RefState::Unsafe)
                        ),
                    )
                    .next(format!("kiln verify-tags {lock_arg} --remote {remote}")),
                }
            }
        },
    });

    // A passed `kiln verify` of these exact bytes: verified.
    items.push(match &lock {
        None => need_lock("verified", "rebuilt bit for bit"),
        Some((_, digest)) => match VerifiedNote::read(store, digest) {
            Ok(Some(note)) => {
                let steps = note.steps.as_str();
                let mark = if note.steps == crate::release::verify::Scope::All {
                    Mark::Done
                } else {
                    Mark::Todo
                };
                let found = item(
                    "verified",
                    "rebuilt bit for bit",
                    mark,
                    format!(
                        "kiln verify --steps {steps} matched this lockfile ({})",
                        digest.short()
                    ),
                );
                if mark == Mark::Done {
                    found
                } else {
                    found.next(format!("kiln verify {lock_arg}"))
                }
            }
            Ok(None) => item(
                "verified",
                "rebuilt bit for bit",
                Mark::Todo,
                format!(
                    "no passed kiln verify of this lockfile ({}) in this store",
                    digest.short()
                ),
            )
            .next(format!("kiln verify {lock_arg}")),
            Err(error) => item(
                "verified",
                "rebuilt bit for bit",
                Mark::Unknown,
                error.to_string(),
            ),
        },
    });

    // The k3s branch on k3s's remote.
    items.push(match (&lock, &k3s_heads) {
        (None, _) => need_lock("k3s-branch", "k3s branch pushed"),
        (Some(_), None) => item(
            "k3s-branch",
            "k3s branch pushed",
            Mark::Unknown,
            "no k3s remote given (--k3s-remote URL)",
        ),
        (Some((lock, _)), Some((remote, refs))) => {
            let branch = &lock.k3s.branch;
            let title = format!("k3s branch {branch} pushed");
            match refs {
                Err(error) => item(
                    "k3s-branch",
                    title,
                    Mark::Unknown,
                    format!("cannot ask {remote}: {error}"),
                ),
                Ok(refs) => match refs.refs.get(branch) {
                    Some(commit) if *commit == lock.k3s.commit => item(
                        "k3s-branch",
                        title,
                        Mark::Done,
                        format!("{remote}: at the locked commit {}", short(commit)),
                    ),
                    Some(commit) => item(
                        "k3s-branch",
                        title,
                        Mark::Wrong,
                        format!(
                            "{remote}: at {}, the lock has {}",
                            short(commit),
                            short(&lock.k3s.commit)
                        ),
                    ),
                    None => item(
                        "k3s-branch",
                        title,
                        Mark::Todo,
                        format!("{remote} has no branch {branch}"),
                    )
                    .next(format!("kiln push {lock_arg} --k3s-remote {remote}")),
                },
            }
        }
    });

    // RC and GA tags, where k3s is published (else the local repository).
    let locked_commit = lock.as_ref().map(|(l, _)| l.k3s.commit.clone());
    let describe = |commit: &str| {
        if locked_commit.as_deref() == Some(commit) {
            format!("{} (the locked k3s commit)", short(commit))
        } else {
            short(commit).to_owned()
        }
    };
    let mut latest_tag = None;
    match &k3s_tags {
        None => {
            for (id, title) in [("rc", "RC tag"), ("ga", "GA tag")] {
                items.push(item(
                    id,
                    title,
                    Mark::Unknown,
                    "no k3s repository given (--k3s-remote URL or --k3s REPO)",
                ));
            }
        }
        Some((at, Err(error))) => {
            for (id, title) in [("rc", "RC tag"), ("ga", "GA tag")] {
                items.push(item(
                    id,
                    title,
                    Mark::Unknown,
                    format!("cannot ask {at}: {error}"),
                ));
            }
        }
        Some((at, Ok(refs))) => {
            let rcs: Vec<(u32, &str, &String)> =
                rcs_among(tag, refs.refs.keys().map(String::as_str))
                    .into_iter()
                    .map(|(n, name)| (n, name, &refs.refs[name]))
                    .collect();
            let tag_cmd = |kind: &str| {
                format!("kiln tag {kind} {version} --suffix {suffix} --k3s REPO --remote {at}")
            };
            items.push(match rcs.last() {
                Some((_, name, commit)) => {
                    latest_tag = name.parse::<K3sVersion>().ok();
                    let earlier: Vec<&str> =
                        rcs[..rcs.len() - 1].iter().map(|(_, n, _)| *n).collect();
                    let earlier = if earlier.is_empty() {
                        String::new()
                    } else {
                        format!(" (after {})", earlier.join(", "))
                    };
                    item(
                        "rc",
                        "RC tag",
                        Mark::Done,
                        format!("{at}: {name} at {}{earlier}", describe(commit)),
                    )
                }
                None => item(
                    "rc",
                    "RC tag",
                    Mark::Todo,
                    format!("{at} has no {version}-rcN+{suffix}"),
                )
                .next(tag_cmd("rc")),
            });
            items.push(match refs.refs.get(&ga) {
                Some(commit) => {
                    latest_tag = Some(tag.ga());
                    item(
                        "ga",
                        "GA tag",
                        Mark::Done,
                        format!("{at}: {ga} at {}", describe(commit)),
                    )
                }
                None => {
                    let todo = item("ga", "GA tag", Mark::Todo, format!("{at} has no {ga}"));
                    if rcs.is_empty() {
                        todo
                    } else {
                        todo.next(tag_cmd("ga"))
                    }
                }
            });
        }
    }

    // Images of the latest tag (GA once it exists).
    let tags_measured = matches!(k3s_tags, Some((_, Ok(_))));
    items.push(match &latest_tag {
        None if !tags_measured => item(
            "images",
            "images published",
            Mark::Unknown,
            "the RC/GA tags (whose images to look for) could not be measured",
        ),
        None => item(
            "images",
            "images published",
            Mark::Todo,
            "no RC or GA tag yet, so no images to look for",
        ),
        Some(tag) => {
            let rows = images::check(&sources.registry, *tag).await;
            let title = format!("images {} published", tag.image_tag());
            let missing: Vec<&str> = rows
                .iter()
                .filter(|r| r.state == ImageState::Missing)
                .map(|r| r.image.as_str())
                .collect();
            if let Some(why) = rows.iter().find_map(|r| match &r.state {
                ImageState::Unreachable(why) => Some(why.clone()),
                _ => None,
            }) {
                item(
                    "images",
                    title,
                    Mark::Unknown,
                    format!("{} unreachable: {why}", sources.registry),
                )
            } else if missing.is_empty() {
                item(
                    "images",
                    title,
                    Mark::Done,
                    format!("{}: all {} present", sources.registry, rows.len()),
                )
            } else {
                item(
                    "images",
                    title,
                    Mark::Todo,
                    format!("missing: {}", missing.join(", ")),
                )
                .next(format!(
                    "kiln images check {tag} --registry {} --wait",
                    sources.registry
                ))
            }
        }
    });

    // KDM's entry.
    items.push(match &sources.kdm {
        None => item(
            "kdm",
            "KDM entry",
            Mark::Unknown,
            "no channels.yaml given (--kdm FILE)",
        ),
        Some(path) => kdm_item(path, tag),
    });

    // The stable channel.
    items.push(match &sources.channel {
        None => item(
            "stable",
            "stable channel",
            Mark::Unknown,
            "no channel.yaml given (--channel FILE)",
        ),
        Some(path) => {
            let name = path.display().to_string();
            let latest = match std::fs::read_to_string(path) {
                Err(error) => Err(format!("{name}: {error}")),
                Ok(text) => stable_latest(&text, &name).map_err(|error| format!("{name}: {error}")),
            };
            match latest {
                Err(detail) => item("stable", "stable channel", Mark::Wrong, detail),
                Ok(latest) if latest == ga => item(
                    "stable",
                    "stable channel",
                    Mark::Done,
                    format!("{name}: stable is {ga}"),
                ),
                Ok(latest) => item(
                    "stable",
                    "stable channel",
                    Mark::Todo,
                    format!("{name}: stable is {latest}"),
                )
                .next(format!("kiln channel set-stable {ga} --file {name}")),
            }
        }
    });
    items
}

fn kdm_item(path: &Path, tag: ForkTag) -> Item {
    let ga = &tag.ga().to_string();
    let name = path.display().to_string();
    let wrong = |error: &dyn std::fmt::Display| {
        item("kdm", "KDM entry", Mark::Wrong, format!("{name}: {error}"))
    };
    let listed = match std::fs::read_to_string(path) {
        Err(error) => return wrong(&error),
        Ok(text) => match listed_versions(&text, &name) {
            Err(error) => return wrong(&error),
            Ok(listed) => listed,
        },
    };
    match listed {
        listed if listed.iter().any(|v| v == ga) => {
            item("kdm", "KDM entry", Mark::Done, format!("{name} lists {ga}"))
        }
        listed => match rcs_among(tag, listed.iter().map(String::as_str))
            .last()
            .map(|(_, v)| *v)
        {
            Some(rc) => item(
                "kdm",
                "KDM entry",
                Mark::Todo,
                format!("{name} lists {rc}; at GA it becomes {ga}"),
            )
            .next(format!("kiln kdm add {ga} --promote --file {name}")),
            None => item(
                "kdm",
                "KDM entry",
                Mark::Todo,
                format!("{name} has no entry of {ga}"),
            )
            .next(format!("kiln kdm add {ga} --file {name}")),
        },
    }
}
