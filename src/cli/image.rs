//! `kiln image bootstrap|toolchain`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::image::{
    BootstrapOptions, DEFAULT_MIRROR, GoLine, LockStatus, bootstrap, ensure_toolchain,
    toolchain_recipe,
};
use crate::sandbox::DockerSandbox;

use super::progress::Progress;
use super::{Outcome, print_json};

#[derive(Debug, Subcommand)]
pub(super) enum ImageCommand {
    /// Build the offline Go base image from Debian packages (mmdebstrap) and import it.
    Bootstrap(BootstrapArgs),
    /// Build (or find) the derived toolchain image steps run in, on a bootstrapped base.
    Toolchain(ToolchainArgs),
}

#[derive(Debug, Args)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
pub(super) struct BootstrapArgs {
    /// Go line to bootstrap: 1.21, 1.22 or 1.23.
    #[arg(long, value_name = "VERSION")]
    go: String,
    /// Debian mirror carrying bookworm and bookworm-backports.
    #[arg(long, env = "KILN_DEBIAN_MIRROR", default_value = DEFAULT_MIRROR)]
    mirror: String,
    /// Rebuild even if the image is already on the engine.
    #[arg(long)]
    force: bool,
    /// Fail if the result differs from the committed lock.
    #[arg(long, conflicts_with = "update_lock")]
    locked: bool,
    /// Rewrite the lock (images/base/<name>.lock) from the result.
    #[arg(long)]
    update_lock: bool,
    /// Directory of the lock files; default: the locks built into kiln (read) and
    /// ./images/base (write).
    #[arg(long, value_name = "DIR")]
    lock_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ToolchainArgs {
    /// Go line: 1.21, 1.22 or 1.23 (a full version like 1.23.5 selects its line).
    #[arg(long, value_name = "VERSION")]
    go: String,
    /// Build on this local image instead of the bootstrapped base, e.g. the production recipe
    /// (images/production/Dockerfile, golang:X-alpine pinned by digest).
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(command: ImageCommand) -> Outcome {
    match command {
        ImageCommand::Bootstrap(args) => run_bootstrap(args).await,
        ImageCommand::Toolchain(args) => run_toolchain(args).await,
    }
}

async fn run_bootstrap(args: BootstrapArgs) -> Outcome {
    let go: GoLine = args.go.parse()?;
    let sandbox = DockerSandbox::connect().await?;
    let options = BootstrapOptions {
        go,
        mirror: args.mirror,
        force: args.force,
        locked: args.locked,
        update_lock: args.update_lock,
        lock_dir: args.lock_dir,
        scratch_dir: std::env::temp_dir(),
    };
    let progress = Progress::new();
    let result = bootstrap(&sandbox, &options, &mut |event| progress.image(event)).await;
    progress.finish();
    let report = result?;
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let image = &report.image;
    println!("base      {}", image.tag);
    println!("rootfs    {}", image.rootfs);
    println!("go        {}", image.go_version);
    println!("packages  {}", image.packages.len());
    println!("engine id {}", image.id);
    println!(
        "built     {}",
        if report.already_present {
            "no (already on the engine)"
        } else {
            "yes"
        }
    );
    match &report.lock {
        LockStatus::Matches { origin } => println!("lock      matches {origin}"),
        LockStatus::Updated { path } => println!("lock      written to {}", path.display()),
        LockStatus::Missing => println!(
            "lock      none recorded; run with --update-lock in the kiln checkout to record it"
        ),
        LockStatus::Differs { origin, diff } => {
            println!("lock      DIFFERS from {origin}:");
            print!("{diff}");
            eprintln!(
                "kiln: warning: base {} differs from its lock; review the difference and run \
                 `kiln image bootstrap --go {go} --update-lock` to accept it (`--locked` makes \
                 this an error)",
                image.tag
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_toolchain(args: ToolchainArgs) -> Outcome {
    let go: GoLine = args.go.parse()?;
    let sandbox = DockerSandbox::connect().await?;
    let progress = Progress::new();
    let result = ensure_toolchain(sandbox.engine(), go, args.base.as_deref(), &mut |event| {
        progress.image(event);
    })
    .await;
    progress.finish();
    let image = result?;
    debug_assert_eq!(image.recipe, toolchain_recipe(&image.base, go));
    if args.json {
        print_json(&image)?;
    } else {
        println!("toolchain {}", image.tag);
        println!("recipe    {}", image.recipe);
        println!("base      {}", image.base);
        println!("go        {}", image.go_version);
        println!("engine id {}", image.id);
    }
    Ok(ExitCode::SUCCESS)
}
