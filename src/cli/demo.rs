//! `kiln demo init`: the generated demo world.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};

use crate::demo::{DemoOptions, OLD_FORK_TAG, init};
use crate::sandbox::DockerSandbox;

use super::progress::Progress;
use super::{Outcome, print_json};

#[derive(Debug, Subcommand)]
pub(super) enum DemoCommand {
    /// Write the demo world (upstream, fork, k3s and KDM as bare repositories, and kiln.toml) to
    /// DIR.
    Init(InitArgs),
}

#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
pub(super) struct InitArgs {
    /// A new or empty directory.
    dir: PathBuf,
    /// All 30 staging modules of Kubernetes 1.28 (default: 6).
    #[arg(long)]
    full: bool,
    /// Grow toward Kubernetes' size: 40·N files per staging module, N commits between releases.
    #[arg(long, default_value_t = 0, value_name = "N")]
    scale: u32,
    /// Also cut v1.28.1-k3s2 in the fork.
    #[arg(long)]
    k3s2: bool,
    /// Leave out the third-party modules. By default k3s requires some (a plain one, a /v3
    /// module from a subdirectory, a pseudo-version, a +incompatible one) and upstream vendors
    /// one that each release raises; they are served from DIR/goproxy by a stand-in module
    /// proxy you start (e.g. `python3 -m http.server -d DIR/goproxy`) and name in
    /// `KILN_GO_PROXY` or kiln.toml's `[go] proxy`. Without them a release needs no module
    /// proxy, but the world is kinder than the real one.
    #[arg(long)]
    no_third_party: bool,
    /// The shape of the fork's tag.sh: `stamp` (commits a stamp, lightweight tags), `hack`
    /// (builds through hack/ with rsync, prints chatter, annotated tags) or `no-stamp` (tags
    /// the patch head itself).
    #[arg(long, value_enum, default_value_t = crate::demo::TagSh::Stamp, value_name = "SHAPE")]
    tag_sh: crate::demo::TagSh,
    /// k3s's 1.28 line on its default branch `main`, with no release-1.28 (as the newest minor
    /// is released).
    #[arg(long)]
    k3s_main: bool,
    /// Upstream releases on Go 1.22 or later (v1.28.2, v1.28.3) are Go workspaces: a root
    /// go.work and vendor/ as `go work vendor` writes it (kubernetes from 1.30), so Go refuses
    /// `-mod=mod` and builds from vendor/.
    #[arg(long)]
    go_work: bool,
    /// N small development commits before the 1.28 import (kubernetes has more than 130,000).
    #[arg(long, default_value_t = 0, value_name = "N")]
    history: u32,
    /// N pull requests in the upstream, as GitHub keeps them: refs/pull/N/{head,merge}.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pull_refs: u32,
    /// N past fork releases (v1.X.Y-k3sN, each with one tag per staging module).
    #[arg(long, default_value_t = 0, value_name = "N")]
    past_releases: u32,
    /// Kubernetes' real shape: --full, --scale 20 (about 25,000 files), --history 100000,
    /// --pull-refs 20000, --past-releases 300 (each unless given larger).
    #[arg(long)]
    real_size: bool,
    /// Print the generated tags as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(command: DemoCommand) -> Outcome {
    let DemoCommand::Init(args) = command;
    // Bad input is refused before anything else, engine or not.
    crate::demo::check_target(&args.dir)?;
    let sandbox = DockerSandbox::connect().await?;
    let options = DemoOptions {
        full: args.full || args.real_size,
        scale: if args.real_size {
            args.scale.max(20)
        } else {
            args.scale
        },
        k3s2: args.k3s2,
        third_party: !args.no_third_party,
        tag_sh: args.tag_sh,
        k3s_on_main: args.k3s_main,
        go_work: args.go_work,
        history: if args.real_size {
            args.history.max(100_000)
        } else {
            args.history
        },
        pull_refs: if args.real_size {
            args.pull_refs.max(20_000)
        } else {
            args.pull_refs
        },
        past_releases: if args.real_size {
            args.past_releases.max(300)
        } else {
            args.past_releases
        },
    };
    let started = Instant::now();
    let progress = Progress::new();
    let result = init(&args.dir, &options, &sandbox, &mut |line| {
        progress.image(crate::image::ImageProgress::Phase(line));
    })
    .await;
    progress.finish();
    let world = result?;
    if args.json {
        print_json(&world)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "demo world in {} ({:.1} s)",
        world.dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  upstream.git  tags {}",
        world
            .upstream_tags
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let own: Vec<&String> = world
        .fork_tags
        .keys()
        .filter(|t| t.contains("-k3s"))
        .collect();
    println!(
        "  fork.git      {} k3s tags, {OLD_FORK_TAG} at {}",
        own.len(),
        world.fork_tags[OLD_FORK_TAG]
    );
    for (index, (branch, commit)) in world.k3s_branches.iter().enumerate() {
        let repo = if index == 0 { "k3s.git" } else { "" };
        let note = if branch == "main" {
            " (channel.yaml)"
        } else {
            ""
        };
        println!("  {repo:<13} {branch} at {commit}{note}");
    }
    println!(
        "  kdm.git       {} with Rancher's k3s channels.yaml",
        crate::demo::KDM_BRANCH
    );
    println!("  modules       {}", world.modules.join(", "));
    Ok(ExitCode::SUCCESS)
}
