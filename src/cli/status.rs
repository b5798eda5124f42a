//! `kiln status VERSION`: the whole runbook of one release as a checklist, each line measured.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::git::Location;
use crate::names::{K8sVersion, Suffix};
use crate::publish::images::DOCKER_HUB;
use crate::publish::status::{Mark, Sources, exit_code, status};
use crate::store::LocalStore;

use super::{Outcome, print_json};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every line is done; 4 when something is left to do or \
    could not be measured; 5 when something disagrees with the release (a moved tag or branch, \
    a file that does not parse); 1 on any other error."
)]
pub(super) struct StatusArgs {
    /// The Kubernetes version of the release, e.g. v1.28.2.
    version: String,
    /// The k3s suffix.
    #[arg(long, default_value = "k3s1", value_name = "k3sN")]
    suffix: String,
    /// The lockfile (default: lockfiles/<version>-<suffix>.lock.json).
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// The fork's remote (its tags; default: kiln.toml's `[publish] fork-remote`).
    #[arg(long, value_name = "URL", value_parser = super::args::location)]
    remote: Option<Location>,
    /// k3s's remote (the release branch, RC and GA tags; default: `[publish] k3s-remote`).
    #[arg(long, value_name = "URL", value_parser = super::args::location)]
    k3s_remote: Option<Location>,
    /// k3s's repository, for RC and GA tags when no --k3s-remote is given (default: kiln.toml's).
    #[arg(long, value_name = "REPO", value_parser = super::args::location)]
    k3s: Option<Location>,
    /// The image registry, host[:port] or http://host:port (default: `[publish] registry`,
    /// else Docker Hub).
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// KDM's channels.yaml (default: `[publish] kdm`).
    #[arg(long, value_name = "FILE")]
    kdm: Option<PathBuf>,
    /// k3s's channel.yaml (default: `[publish] channel`).
    #[arg(long, value_name = "FILE")]
    channel: Option<PathBuf>,
    /// Print the checklist as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(args: StatusArgs, store_dir: &Path) -> Outcome {
    let version: K8sVersion = args.version.parse()?;
    let suffix: Suffix = args.suffix.parse()?;
    let fork_tag = version.fork_tag(suffix);
    // kiln.toml is read once, and only when a flag it would default is missing.
    let needed = args.remote.is_none()
        || args.k3s_remote.is_none()
        || args.k3s.is_none()
        || args.registry.is_none()
        || args.kdm.is_none()
        || args.channel.is_none();
    let toml = super::args::kiln_toml_if(needed)?.unwrap_or_default();
    let publish = toml.publish;
    let sources = Sources {
        fork_tag,
        lockfile: args
            .lock
            .clone()
            .unwrap_or_else(|| crate::release::lockfile_path(Path::new("lockfiles"), fork_tag)),
        fork_remote: args.remote.clone().or(publish.fork_remote),
        k3s_remote: args.k3s_remote.clone().or(publish.k3s_remote),
        k3s: args.k3s.clone().or(toml.repos.map(|(_, _, k3s)| k3s)),
        registry: args
            .registry
            .clone()
            .or(publish.registry)
            .unwrap_or_else(|| DOCKER_HUB.to_owned()),
        kdm: args.kdm.clone().or(publish.kdm),
        channel: args.channel.clone().or(publish.channel),
    };
    let store = LocalStore::open(store_dir)?;
    let items = status(&sources, &store).await;
    let code = exit_code(&items);
    if args.json {
        print_json(&serde_json::json!({
            "release": fork_tag.ga(),
            "items": items,
            "done": items.iter().filter(|i| i.mark == Mark::Done).count(),
            "total": items.len(),
            "exit": code,
        }))?;
        return Ok(ExitCode::from(code));
    }
    println!("release {}", fork_tag.ga());
    for item in &items {
        let mark = match item.mark {
            Mark::Done => "[x]",
            Mark::Todo => "[ ]",
            Mark::Wrong => "[!]",
            Mark::Unknown => "[?]",
        };
        println!("{mark} {:<34} {}", item.title, item.detail);
        if let Some(next) = &item.next {
            println!("    {:<34} next: {next}", "");
        }
    }
    let done = items.iter().filter(|i| i.mark == Mark::Done).count();
    println!("{done}/{} done", items.len());
    Ok(ExitCode::from(code))
}
