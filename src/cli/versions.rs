//! `kiln versions` and `kiln bump-k3s`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::release::{
    GoModEdit, K8sVersion, ReleaseError, RepoFacts, Suffix, bump_k3s, check_pair, derive,
};
use crate::store::LocalStore;

use super::table::Table;
use super::{Outcome, print_json};

/// The repositories, when not from kiln.toml.
#[derive(Debug, Args)]
pub(super) struct RepoArgs {
    /// Upstream Kubernetes (path or URL); default: kiln.toml in the current directory.
    #[arg(long)]
    pub(super) upstream: Option<String>,
    /// The k3s-io fork of Kubernetes (path or URL).
    #[arg(long)]
    pub(super) fork: Option<String>,
    /// k3s (path or URL).
    #[arg(long)]
    pub(super) k3s: Option<String>,
}

impl RepoArgs {
    /// The repositories: these flags, else `kiln.toml` in the current directory.
    pub(super) fn load(&self) -> Result<crate::release::RepoSet, crate::release::ReleaseError> {
        crate::release::load_repos(
            Path::new("."),
            self.upstream.as_deref(),
            self.fork.as_deref(),
            self.k3s.as_deref(),
        )
    }
}

/// The release's versions, as every release command names them.
#[derive(Debug, Args)]
pub(super) struct VersionPair {
    /// The released Kubernetes version, e.g. v1.28.1.
    #[arg(long)]
    pub(super) old: String,
    /// The Kubernetes version to release, e.g. v1.28.2.
    #[arg(long)]
    pub(super) new: String,
    /// The old release's suffix (default: the highest k3sN the fork has; for bump-k3s, the
    /// one go.mod names).
    #[arg(long)]
    pub(super) old_suffix: Option<String>,
    /// The new release's suffix.
    #[arg(long, default_value = "k3s1")]
    pub(super) new_suffix: String,
}

impl VersionPair {
    /// Checks what needs no repository: semver, same minor, new > old, the suffixes.
    pub(super) fn check(&self) -> Result<(K8sVersion, K8sVersion), ReleaseError> {
        let pair = check_pair(&self.old, &self.new)?;
        self.new_suffix.parse::<Suffix>()?;
        if let Some(old) = &self.old_suffix {
            old.parse::<Suffix>()?;
        }
        Ok(pair)
    }
}

#[derive(Debug, Args)]
pub(super) struct VersionsArgs {
    #[command(flatten)]
    pair: VersionPair,
    #[command(flatten)]
    repos: RepoArgs,
    /// Print the names as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run_versions(args: VersionsArgs, store_dir: &Path) -> Outcome {
    // Checked before any repository is read.
    args.pair.check()?;
    let repos = args.repos.load()?;
    let store = LocalStore::open(store_dir)?;
    let git_dir = store.root().join("git");
    let upstream = repos.upstream.clone();
    let names = tokio::task::spawn_blocking(move || -> Result<_, ReleaseError> {
        let facts = RepoFacts {
            upstream_tags: crate::git::list_tags(&repos.upstream)?,
            fork_tags: crate::git::list_tags(&repos.fork)?,
            k3s_tags: crate::git::list_tags(&repos.k3s)?,
        };
        let pair = &args.pair;
        let names = derive(
            &pair.old,
            &pair.new,
            pair.old_suffix.as_deref(),
            Some(&pair.new_suffix),
            &facts,
            |new| {
                let mirror = crate::git::mirror(&git_dir, &upstream)?;
                let text = crate::git::read_file(&mirror, &new.to_string(), ".go-version")?;
                text.map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| ReleaseError::NoGoVersion {
                        tag: new.to_string(),
                    })
            },
        )?;
        let exists = facts.fork_tags.contains(&names.new_fork_tag);
        Ok((names, exists))
    })
    .await
    .expect("reading tags does not panic")?;
    let (names, new_tag_exists) = names;
    if args.json {
        print_json(&names)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["name", "value"]);
    let rows = [
        ("old k8s", &names.old_k8s),
        ("new k8s", &names.new_k8s),
        ("old client", &names.old_client),
        ("new client", &names.new_client),
        ("old fork tag", &names.old_fork_tag),
        ("new fork tag", &names.new_fork_tag),
        ("release branch", &names.release_branch),
        ("go version", &names.go_version),
        ("next rc", &names.rc),
        ("ga", &names.ga),
        ("rc image tag", &names.rc_image_tag),
        ("ga image tag", &names.ga_image_tag),
    ];
    for (name, value) in rows {
        table.row(vec![name.into(), value.clone()]);
    }
    print!("{}", table.render());
    if new_tag_exists {
        eprintln!(
            "kiln: note: the fork already has {}; a release must reproduce it exactly",
            names.new_fork_tag
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(super) struct BumpArgs {
    #[command(flatten)]
    pair: VersionPair,
    /// Also move the Go version in Dockerfile* and the workflows to this one.
    #[arg(long, value_name = "VERSION")]
    go: Option<String>,
    /// The k3s checkout to edit in place.
    path: PathBuf,
    /// Print the changed lines as JSON.
    #[arg(long)]
    json: bool,
}

/// The old fork suffix named by go.mod's replace of k8s.io/kubernetes.
fn suffix_from_go_mod(path: &Path, old: &K8sVersion) -> Result<Suffix, ReleaseError> {
    let go_mod = path.join("go.mod");
    let text = std::fs::read_to_string(&go_mod).map_err(|source| ReleaseError::Io {
        action: "read",
        path: go_mod.clone(),
        source,
    })?;
    let prefix = format!("{old}-");
    text.split_whitespace()
        .filter_map(|token| token.strip_prefix(&prefix)?.parse::<Suffix>().ok())
        .max()
        .ok_or_else(|| ReleaseError::GoMod {
            path: go_mod.display().to_string(),
            line: 0,
            reason: format!("no fork tag {old}-k3sN in it; give --old-suffix or check --old"),
        })
}

pub(super) fn run_bump(args: &BumpArgs) -> Outcome {
    let (old, new) = args.pair.check()?;
    let new_suffix: Suffix = args.pair.new_suffix.parse()?;
    let old_suffix = match &args.pair.old_suffix {
        Some(given) => given.parse()?,
        None => suffix_from_go_mod(&args.path, &old)?,
    };
    if let Some(go) = &args.go {
        let parts: Vec<&str> = go.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || !parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(miette::miette!(
                help = "for example --go 1.23.5",
                "`{go}` is not a Go version"
            ));
        }
    }
    let edit = GoModEdit {
        old_k8s: old.to_string(),
        new_k8s: new.to_string(),
        old_client: old.client(),
        new_client: new.client(),
        old_fork_tag: format!("{old}-{old_suffix}"),
        new_fork_tag: format!("{new}-{new_suffix}"),
    };
    let report = bump_k3s(&args.path, &edit, args.go.as_deref())?;
    if args.json {
        print_json(&report)?;
    } else {
        for change in &report.changes {
            println!("{change}");
        }
        println!("{} lines changed", report.changes.len());
    }
    Ok(ExitCode::SUCCESS)
}
