//! `kiln rc VERSION`: the next RC name; `kiln tag rc|ga VERSION`: create it (or the GA tag) on
//! the release branch head, locally and optionally on a remote, never moving a tag.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::git::{self, Location};
use crate::names::{ForkTag, K8sVersion, Suffix, next_rc};
use crate::release::{TagKind, create_tag, plan_tag};

use super::{Outcome, print_json};

/// The k3s repository and the version, shared by `rc` and `tag`.
#[derive(Debug, Args)]
pub(super) struct Target {
    /// The Kubernetes version of the release, e.g. v1.28.2.
    version: String,
    /// The k3s suffix.
    #[arg(long, default_value = "k3s1", value_name = "k3sN")]
    suffix: String,
    /// The k3s repository (a local path for `tag`; default: kiln.toml's k3s).
    #[arg(long, value_name = "REPO", value_parser = super::args::location)]
    k3s: Option<Location>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl Target {
    fn parse(&self) -> miette::Result<(ForkTag, Location)> {
        let version: K8sVersion = self.version.parse()?;
        let suffix: Suffix = self.suffix.parse()?;
        let k3s = match &self.k3s {
            Some(k3s) => k3s.clone(),
            None => super::args::kiln_toml()?
                .and_then(|toml| toml.repos.map(|(_, _, k3s)| k3s))
                .ok_or_else(|| {
                    miette::miette!(
                        help = "pass --k3s REPO, or run where kiln.toml names the repositories",
                        "no k3s repository given"
                    )
                })?,
        };
        Ok((version.fork_tag(suffix), k3s))
    }
}

#[derive(Debug, Args)]
pub(super) struct RcArgs {
    #[command(flatten)]
    target: Target,
}

pub(super) fn run_rc(args: &RcArgs) -> Outcome {
    let (fork_tag, k3s) = args.target.parse()?;
    let tags = git::list_tags(&k3s)?;
    let rc = fork_tag.rc(next_rc(fork_tag, tags.iter().map(String::as_str)));
    if args.target.json {
        print_json(&serde_json::json!({
            "rc": rc,
            "number": rc.rc,
            "image_tag": rc.image_tag(),
        }))?;
    } else {
        println!("{rc}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// The next release candidate, vX.Y.Z-rcN+k3sM.
    Rc,
    /// The release, vX.Y.Z+k3sM (needs an RC first).
    Ga,
}

#[derive(Debug, Args)]
pub(super) struct TagArgs {
    /// Which tag.
    kind: Kind,
    #[command(flatten)]
    target: Target,
    /// The branch whose head is tagged (default: kiln.toml's `[release] k3s-branch`, else
    /// release-X.Y when k3s has it, else k3s's default branch).
    #[arg(long, value_name = "BRANCH")]
    branch: Option<String>,
    /// Also push the tag there (refused if the remote has it elsewhere).
    #[arg(long, value_name = "URL", value_parser = super::args::location)]
    remote: Option<Location>,
    /// Say what would be tagged, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(super) fn run_tag(args: &TagArgs) -> Outcome {
    let (fork_tag, k3s) = args.target.parse()?;
    let Some(repo) = k3s.local_path().filter(|p| p.exists()) else {
        return Err(miette::miette!(
            help = "tags are made in a local clone of k3s, then pushed with --remote",
            "{k3s} is not a local repository"
        ));
    };
    // As the release chose it: --branch, kiln.toml's k3s-branch, release-X.Y when k3s has
    // it, else k3s's default branch (where the newest minor is released).
    let configured = match &args.branch {
        Some(branch) => Some(branch.clone()),
        None => super::args::kiln_toml()?.and_then(|toml| toml.release.k3s_branch.clone()),
    };
    let branch = crate::release::choose_k3s_branch(
        repo,
        &k3s,
        configured.as_deref(),
        &fork_tag.k8s.release_branch(),
    )?;
    let kind = match args.kind {
        Kind::Rc => TagKind::Rc,
        Kind::Ga => TagKind::Ga,
    };
    let plan = plan_tag(repo, kind, fork_tag, &branch)?;
    // The remote is checked before anything is created.
    let remote = args.remote.as_ref();
    let mut remote_has = false;
    if let Some(remote) = remote {
        let refs = git::ls_remote(remote, "tags")?;
        match refs.refs.get(&plan.tag.to_string()) {
            Some(at) if *at == plan.commit => remote_has = true,
            Some(at) => {
                return Err(miette::miette!(
                    help = "kiln never moves a published tag",
                    "{remote} already has {} at {at}, not at {}",
                    plan.tag,
                    plan.commit
                ));
            }
            None => {}
        }
    }
    let action = if args.dry_run {
        "would create"
    } else if plan.exists {
        "exists"
    } else {
        "created"
    };
    if !args.dry_run {
        create_tag(repo, &plan)?;
        if let Some(remote) = remote
            && !remote_has
        {
            git::push_atomic(repo, remote, &[format!("refs/tags/{}", plan.tag)])?;
        }
    }
    if args.target.json {
        print_json(&serde_json::json!({
            "tag": plan.tag,
            "image_tag": plan.tag.image_tag(),
            "branch": plan.branch,
            "commit": plan.commit,
            "action": action,
            "rcs": plan.rcs,
            "remote": remote,
        }))?;
    } else {
        println!(
            "{action} {} at {} (head of {})",
            plan.tag, plan.commit, plan.branch
        );
        if let Some(remote) = remote {
            let pushed = if args.dry_run {
                "would push"
            } else if remote_has {
                "already on"
            } else {
                "pushed to"
            };
            println!("{pushed} {remote}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
