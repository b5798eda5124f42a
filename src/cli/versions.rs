//! `kiln versions` and `kiln bump-k3s`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::names::{ForkTag, GoVersion, K8sVersion, Suffix};
use crate::release::{GoModEdit, ReleaseError, bump_k3s, derive_names};
use crate::store::LocalStore;

use super::args::{RepoArgs, VersionPair};
use super::table::Table;
use super::{Outcome, print_json};

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
    // Checked before any file or repository is read.
    let versions = args.pair.versions()?;
    let repos = args.repos.repos(super::args::kiln_toml()?.as_ref())?;
    let store = LocalStore::open(store_dir)?;
    let git_dir = store.git_dir();
    let (names, new_tag_exists) =
        tokio::task::spawn_blocking(move || derive_names(&repos, &versions, &git_dir))
            .await
            .expect("reading tags does not panic")?;
    if args.json {
        print_json(&names)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["name", "value"]);
    for (name, value) in names.table() {
        table.row(vec![name.into(), value]);
    }
    print!("{}", table.render());
    if new_tag_exists {
        eprintln!(
            "kiln: note: the fork already has {}; a release must reproduce it exactly",
            names.new_fork_tag()
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
fn suffix_from_go_mod(path: &Path, old: K8sVersion) -> Result<Suffix, ReleaseError> {
    let go_mod = path.join("go.mod");
    let text = std::fs::read_to_string(&go_mod).map_err(ReleaseError::io("read", &go_mod))?;
    text.split_whitespace()
        .filter_map(ForkTag::parse)
        .filter(|tag| tag.k8s == old)
        .map(|tag| tag.suffix)
        .max()
        .ok_or_else(|| ReleaseError::GoMod {
            path: go_mod.display().to_string(),
            line: 0,
            reason: format!("no fork tag {old}-k3sN in it; give --old-suffix or check --old"),
        })
}

pub(super) fn run_bump(args: &BumpArgs) -> Outcome {
    let versions = args.pair.versions()?;
    let go = args
        .go
        .as_deref()
        .map(str::parse::<GoVersion>)
        .transpose()?;
    let old = versions.old();
    let old_suffix = match versions.old_suffix() {
        Some(suffix) => suffix,
        None => suffix_from_go_mod(&args.path, old)?,
    };
    let edit = GoModEdit::new(old.fork_tag(old_suffix), versions.new_fork_tag());
    let report = bump_k3s(&args.path, &edit, go.as_ref().map(GoVersion::as_str))?;
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
