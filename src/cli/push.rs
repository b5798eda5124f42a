//! `kiln push LOCK`: publish a locked release without ever moving a ref; `kiln verify-tags
//! LOCK --remote URL`: is the remote's tag set exactly the locked one?

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::git::Location;
use crate::lockfile::Lockfile;
use crate::publish::{EXIT_DIVERGED, EXIT_MISSING, RefState, TagReport, by_state};
use crate::store::LocalStore;

use super::table::Table;
use super::{Outcome, print_json};

#[derive(Debug, Args)]
pub(super) struct PushArgs {
    /// The lockfile (`lockfiles/<new fork tag>.lock.json`).
    lockfile: PathBuf,
    /// Print the `git push` lines the runbook's push.sh would hold, and push nothing.
    #[arg(long)]
    dry_run: bool,
    /// The fork's remote: its missing tags are pushed there in one atomic push (default:
    /// kiln.toml's `[publish] fork-remote`).
    #[arg(long, value_name = "URL", value_parser = super::args::location)]
    remote: Option<Location>,
    /// k3s's remote: the release branch is pushed there (default: `[publish] k3s-remote`).
    #[arg(long, value_name = "URL", value_parser = super::args::location)]
    k3s_remote: Option<Location>,
    /// Print what was pushed as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &PushArgs, store_dir: &Path) -> Outcome {
    // The lockfile is checked before any remote is named to git.
    let lock = Lockfile::read(&args.lockfile)?;
    let publish = super::publish_config(args.remote.is_none() || args.k3s_remote.is_none())?;
    let fork_remote = args.remote.clone().or(publish.fork_remote);
    let k3s_remote = args.k3s_remote.clone().or(publish.k3s_remote);
    if args.dry_run {
        let fork = fork_remote.as_ref().map_or("$REMOTE", Location::as_str);
        let k3s = k3s_remote.as_ref().map_or("$K3S_REMOTE", Location::as_str);
        for line in crate::publish::push_lines(&lock, fork, k3s) {
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if fork_remote.is_none() && k3s_remote.is_none() {
        return Err(miette::miette!(
            help = "give --remote URL (the fork's tags) and/or --k3s-remote URL (the k3s branch), \
                    or name them in kiln.toml's [publish]; --dry-run prints the push lines",
            "nothing to push to"
        ));
    }
    // Commits by the demo's placeholder captain stay in local repositories: the release took
    // that identity only because every repository it read was local.
    let email = &lock.inputs.identity.email;
    if email.trim().to_ascii_lowercase().ends_with(".invalid")
        && let Some(remote) = [&fork_remote, &k3s_remote]
            .into_iter()
            .flatten()
            .find(|l| l.local_path().is_none())
    {
        return Err(crate::release::ReleaseError::PlaceholderIdentity {
            email: email.clone(),
            remote: remote.as_str().to_owned(),
        }
        .into());
    }
    let store = LocalStore::open(store_dir)?;
    let report = crate::publish::push(&lock, &store, fork_remote.as_ref(), k3s_remote.as_ref())?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&["ref", "commit", "action"]);
    for pushed in report.fork.iter().chain(&report.k3s) {
        table.row(vec![
            pushed.name.clone(),
            pushed.commit.clone(),
            pushed.action.into(),
        ]);
    }
    print!("{}", table.render());
    let pushed =
        |list: &[crate::publish::Pushed]| list.iter().filter(|p| p.action == "pushed").count();
    if let Some(remote) = &fork_remote {
        println!(
            "fork  {remote}: {} tags pushed atomically, {} already there; verified",
            pushed(&report.fork),
            report.fork.len() - pushed(&report.fork)
        );
    } else {
        println!("fork  not pushed (no --remote)");
    }
    if let Some(remote) = &k3s_remote {
        println!(
            "k3s   {remote}: branch {} {}",
            lock.k3s.branch,
            if pushed(&report.k3s) > 0 {
                "pushed"
            } else {
                "already there"
            }
        );
    } else {
        println!(
            "k3s   branch {} not pushed (no --k3s-remote)",
            lock.k3s.branch
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the remote holds exactly the locked tags; \
    4 when some are missing and nothing else is wrong (not pushed yet); \
    5 when a tag moved, or tags of the release exist that the lock does not have; \
    1 on any other error."
)]
pub(super) struct VerifyTagsArgs {
    /// The lockfile.
    lockfile: PathBuf,
    /// The fork's remote, a URL or a path (default: kiln.toml's `[publish] fork-remote`).
    #[arg(long, value_name = "URL", value_parser = super::args::location)]
    remote: Option<Location>,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn run_verify_tags(args: &VerifyTagsArgs) -> Outcome {
    let lock = Lockfile::read(&args.lockfile)?;
    let remote = args
        .remote
        .clone()
        .or(super::publish_config(args.remote.is_none())?.fork_remote)
        .ok_or_else(|| {
            miette::miette!(
                help = "give --remote URL, or name it as fork-remote in kiln.toml's [publish]",
                "no fork remote to check"
            )
        })?;
    let report = crate::publish::verify_tags(&lock, &remote)?;
    let code = report.exit_code();
    if args.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            report: &'a TagReport,
            counts: std::collections::BTreeMap<&'static str, usize>,
            exit: u8,
        }
        print_json(&Json {
            report: &report,
            counts: by_state(&report),
            exit: code,
        })?;
    } else {
        print_tag_report(&report);
    }
    Ok(ExitCode::from(code))
}

fn print_tag_report(report: &TagReport) {
    let mut table = Table::new(&["tag", "state", "locked", "remote"]);
    for tag in &report.tags {
        let (state, remote) = match &tag.state {
            RefState::Present => ("present", tag.locked.clone().unwrap_or_default()),
            RefState::Missing => ("MISSING", "-".to_owned()),
            RefState::Moved { remote } => ("MOVED", remote.clone()),
            RefState::Extra { remote } => ("EXTRA", remote.clone()),
            RefState::Unsafe => ("UNSAFE NAME", "-".to_owned()),
        };
        table.row(vec![
            tag.name.clone(),
            state.into(),
            tag.locked.clone().unwrap_or_else(|| "-".into()),
            remote,
        ]);
    }
    print!("{}", table.render());
    let counts = by_state(report);
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let verdict = match report.exit_code() {
        0 => "the remote holds exactly the locked tags".to_owned(),
        EXIT_MISSING => "not (fully) pushed yet: `kiln push` adds the missing tags".to_owned(),
        EXIT_DIVERGED => {
            "the remote disagrees with the lock: never push over it; find out who published these"
                .to_owned()
        }
        other => format!("exit {other}"),
    };
    println!("{}: {} — {verdict}", report.remote, summary.join(", "));
}
