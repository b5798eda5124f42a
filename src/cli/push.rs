//! `kiln push LOCK --dry-run`: the push lines of a locked release.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::lockfile::Lockfile;

use super::Outcome;

#[derive(Debug, Args)]
pub(super) struct PushArgs {
    /// The lockfile (`lockfiles/<new fork tag>.lock.json`).
    lockfile: PathBuf,
    /// Print the `git push` lines the runbook's push.sh would hold, and push nothing.
    /// (Pushing itself, with its checks against the remote, is `kiln push` without it — next.)
    #[arg(long, required = true)]
    dry_run: bool,
    /// The fork's remote, in place of the literal `$REMOTE`.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// k3s's remote, in place of the literal `$K3S_REMOTE`.
    #[arg(long, value_name = "URL")]
    k3s_remote: Option<String>,
}

pub(super) fn run(args: &PushArgs) -> Outcome {
    let lock = Lockfile::read(&args.lockfile)?;
    for remote in [&args.remote, &args.k3s_remote].into_iter().flatten() {
        crate::git::validate_location(remote)?;
    }
    let fork = args.remote.as_deref().unwrap_or("$REMOTE");
    let k3s = args.k3s_remote.as_deref().unwrap_or("$K3S_REMOTE");
    for line in lock.push_lines(fork, k3s) {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
